"""Agreement statistics and the exact binomial test, in plain Python.

Every multi-rater statistic here depends on an item only through its *profile*: for the
nominal statistics (percent agreement, Fleiss' kappa, Krippendorff's alpha) the tuple of how
many ratings fell in each category; for Cohen's kappa the pair (first rater's category, second
rater's category). Data is therefore passed as a ``Counter`` of profiles. That keeps a project
with a million judgments down to a few dozen distinct profiles, and lets the bootstrap resample
items by drawing profile multiplicities from a multinomial instead of touching every item.

A statistic that is undefined on its data (no items, or no variation to measure against) is
``None``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

P = TypeVar("P", bound=Hashable)
Profiles = Counter  # Counter[profile, number of items with that profile]

# Bootstrap defaults: replicates and the seed, fixed so the same data gives the same interval.
BOOTSTRAP_REPLICATES = 1000
BOOTSTRAP_SEED = 20261127


def count_profiles(
    items: Iterable[Sequence[Hashable]], categories: Sequence[Hashable]
) -> Counter[tuple[int, ...]]:
    """Items (each a list of the categories its raters chose) as count-vector profiles.

    Items with fewer than two ratings are left out: they carry no agreement information.

    Raises:
        ValueError: a rating is not one of ``categories``.
    """
    index = {c: i for i, c in enumerate(categories)}
    profiles: Counter[tuple[int, ...]] = Counter()
    for ratings in items:
        if len(ratings) < 2:
            continue
        counts = [0] * len(categories)
        for r in ratings:
            if r not in index:
                raise ValueError(f"unknown category {r!r}")
            counts[index[r]] += 1
        profiles[tuple(counts)] += 1
    return profiles


def n_items(profiles: Counter) -> int:
    return sum(profiles.values())


# --- Multi-rater, nominal ---------------------------------------------------------------


def percent_agreement(profiles: Counter[tuple[int, ...]]) -> float | None:
    """Mean over items of the share of agreeing rater pairs (Fleiss's P-bar).

    For an item rated by n raters with n_j in category j: sum_j n_j (n_j - 1) / (n (n - 1)).
    """
    total = weight = 0.0
    for counts, m in profiles.items():
        n = sum(counts)
        if n < 2:
            continue
        total += m * sum(c * (c - 1) for c in counts) / (n * (n - 1))
        weight += m
    return total / weight if weight else None


def fleiss_kappa(profiles: Counter[tuple[int, ...]]) -> float | None:
    """Fleiss' kappa (Fleiss 1971, eq. 7-9): (P-bar - P_e) / (1 - P_e).

    P-bar is :func:`percent_agreement`; P_e = sum_j p_j^2 with p_j the share of all ratings in
    category j. Items may have different numbers of raters (p_j then pools all ratings).
    """
    p_bar = percent_agreement(profiles)
    if p_bar is None:
        return None
    k = len(next(iter(profiles)))
    totals = [0] * k
    for counts, m in profiles.items():
        if sum(counts) < 2:
            continue
        for j, c in enumerate(counts):
            totals[j] += m * c
    n = sum(totals)
    p_e = sum((t / n) ** 2 for t in totals)
    if p_e >= 1.0:
        return None
    return (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha_nominal(profiles: Counter[tuple[int, ...]]) -> float | None:
    """Krippendorff's alpha for nominal data (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability", section C).

    From the coincidence matrix o_ck = sum_u (number of c-k pairs in unit u) / (m_u - 1) over
    units with m_u >= 2 values: alpha = 1 - (n - 1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k,
    with n_c = sum_k o_ck and n = sum_c n_c.
    """
    k = len(next(iter(profiles))) if profiles else 0
    # Off-diagonal coincidences only: a unit with counts n_j contributes
    # (m_u^2 - sum_j n_j^2) / (m_u - 1) disagreeing pairs.
    disagree = 0.0
    n_c = [0.0] * k
    for counts, m in profiles.items():
        mu = sum(counts)
        if mu < 2:
            continue
        disagree += m * (mu * mu - sum(c * c for c in counts)) / (mu - 1)
        for j, c in enumerate(counts):
            n_c[j] += m * c
    n = sum(n_c)
    if n < 2:
        return None
    expected = n * n - sum(x * x for x in n_c)
    if expected <= 0:
        return None
    return 1.0 - (n - 1) * disagree / expected


# --- Two raters -----------------------------------------------------------------------------


def cohen_kappa(pairs: Counter[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa (Cohen 1960) from (first rater, second rater) category pairs.

    kappa = (p_o - p_e) / (1 - p_e), p_o the share of items where they agree, p_e the sum over
    categories of the product of the two raters' marginal shares.
    """
    n = sum(pairs.values())
    if n == 0:
        return None
    first: Counter[Hashable] = Counter()
    second: Counter[Hashable] = Counter()
    agree = 0
    for (a, b), m in pairs.items():
        first[a] += m
        second[b] += m
        if a == b:
            agree += m
    p_o = agree / n
    p_e = sum(first[c] * second[c] for c in first) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


# --- Bootstrap -----------------------------------------------------------------------------


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """One exact Binomial(n, p) draw by inversion, walking outwards from the mode.

    Any order of visiting the outcomes gives an exact sample; starting at the mode keeps the
    walk to about sqrt(n p (1 - p)) steps, so large n stays cheap.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    q = 1.0 - p
    mode = min(n, int((n + 1) * p))
    log_pmf = (
        math.lgamma(n + 1)
        - math.lgamma(mode + 1)
        - math.lgamma(n - mode + 1)
        + mode * math.log(p)
        + (n - mode) * math.log(q)
    )
    u = rng.random() - math.exp(log_pmf)
    if u <= 0:
        return mode
    up_k, up_p = mode, math.exp(log_pmf)
    down_k, down_p = mode, up_p
    while True:
        moved = False
        if up_k < n:
            up_p *= (n - up_k) / (up_k + 1) * p / q
            up_k += 1
            u -= up_p
            moved = True
            if u <= 0:
                return up_k
        if down_k > 0:
            down_p *= down_k / (n - down_k + 1) * q / p
            down_k -= 1
            u -= down_p
            moved = True
            if u <= 0:
                return down_k
        if not moved or (up_p == 0.0 and down_p == 0.0):
            # Rounding left a sliver of probability unassigned: the mode takes it.
            return mode


# Up to this many items a resample draws each item (fast in C); above it, one binomial per
# distinct profile (fast when items far outnumber profiles). Both are the same exact bootstrap.
_DRAW_ITEMS_UP_TO = 5000


def _resample(rng: random.Random, profiles: Counter[P]) -> Counter[P]:
    """Resample the items with replacement: one multinomial draw of profile multiplicities."""
    keys = list(profiles)
    total = sum(profiles.values())
    if total <= _DRAW_ITEMS_UP_TO:
        cum, running = [], 0
        for key in keys:
            running += profiles[key]
            cum.append(running)
        return Counter(rng.choices(keys, cum_weights=cum, k=total))
    remaining_n, remaining_w = total, total
    out: Counter[P] = Counter()
    for key in keys[:-1]:
        w = profiles[key]
        x = _binomial(rng, remaining_n, w / remaining_w) if remaining_w > 0 else 0
        if x:
            out[key] = x
        remaining_n -= x
        remaining_w -= w
    if keys and remaining_n:
        out[keys[-1]] = remaining_n
    return out


def bootstrap_ci(
    profiles: Counter[P],
    statistic: Callable[[Counter[P]], float | None],
    *,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> list[float] | None:
    """Percentile bootstrap interval of ``statistic``, resampling items; None when undefined.

    Replicates where the statistic is undefined (e.g. every resampled item in one category)
    are dropped; with fewer than half defined the interval is None.
    """
    if not profiles or statistic(profiles) is None:
        return None
    rng = random.Random(seed)
    values = []
    for _ in range(replicates):
        value = statistic(_resample(rng, profiles))
        if value is not None:
            values.append(value)
    if len(values) < replicates / 2:
        return None
    values.sort()
    tail = (1 - level) / 2
    lo = values[min(len(values) - 1, max(0, math.floor(tail * len(values))))]
    hi = values[min(len(values) - 1, max(0, math.ceil((1 - tail) * len(values)) - 1))]
    return [lo, hi]


# --- Exact binomial test ------------------------------------------------------------------------


def _log_pmf(k: int, n: int, p: float) -> float:
    if p == 0.0:
        return 0.0 if k == 0 else -math.inf
    if p == 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def binomial_test(k: int, n: int, p: float = 0.5) -> float | None:
    """Two-sided exact binomial test: P-value of k successes in n trials under Binomial(n, p).

    The two-sided p-value sums the probabilities of every outcome no more likely than the one
    observed (the "minimum likelihood" rule of scipy.stats.binomtest and R's binom.test), with
    a relative tolerance of 1e-7 so outcomes equally likely up to rounding count as equal.
    None when n is 0.

    The pmf is unimodal, so those outcomes are the two tails: below the mode up to a bound, and
    above it from a bound. Each tail is summed outwards from its inner end and stops once the
    terms no longer change the sum, so a large n costs about sqrt(n) terms, not n.
    """
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError("k must be between 0 and n")
    if not 0.0 <= p <= 1.0:
        raise ValueError("p must be between 0 and 1")
    if p in (0.0, 1.0):
        return 1.0 if k == (0 if p == 0.0 else n) else 0.0
    cutoff = _log_pmf(k, n, p) + math.log1p(1e-7)
    # The larger mode: the pmf does not decrease up to it and decreases after it.
    mode = min(n, math.floor((n + 1) * p))
    low_end: int | None
    high_start: int | None
    if k <= mode:
        low_end = k
        high_start = _first_at_most(max(k + 1, mode), n, n, p, cutoff)
    else:
        high_start = k
        low_end = _last_at_most(0, mode, n, p, cutoff)
    total = 0.0
    if low_end is not None:
        total += _tail(low_end, -1, n, p)
    if high_start is not None:
        total += _tail(high_start, +1, n, p)
    return min(1.0, total)


def _first_at_most(lo: int, hi: int, n: int, p: float, cutoff: float) -> int | None:
    """The smallest i in [lo, hi] with log pmf(i) <= cutoff, the pmf decreasing there."""
    if lo > hi or _log_pmf(hi, n, p) > cutoff:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _log_pmf(mid, n, p) <= cutoff:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _last_at_most(lo: int, hi: int, n: int, p: float, cutoff: float) -> int | None:
    """The largest i in [lo, hi] with log pmf(i) <= cutoff, the pmf not decreasing there."""
    if lo > hi or _log_pmf(lo, n, p) > cutoff:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _log_pmf(mid, n, p) <= cutoff:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _tail(start: int, step: int, n: int, p: float) -> float:
    """The sum of pmf(i) from ``start`` outwards (step -1: down to 0, +1: up to n).

    The terms shrink ever faster away from the mode (the pmf is log-concave), so once a term
    is below 1e-17 of the first the rest cannot change the sum.
    """
    term = math.exp(_log_pmf(start, n, p))
    terms = [term]
    odds = p / (1 - p)
    i = start
    while 0 <= i + step <= n:
        term *= (n - i) / (i + 1) * odds if step == 1 else i / (n - i + 1) / odds
        i += step
        terms.append(term)
        if term <= 1e-17 * terms[0]:
            break
    return math.fsum(terms)
