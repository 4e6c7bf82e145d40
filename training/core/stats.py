"""Statistics for comparing model versions: win rates with prompt-clustered bootstrap
intervals, a length-controlled win rate, and Bradley-Terry ratings on an Elo scale.

Plain functions over plain numbers (no Django, no torch), so that the evaluate command, the
leaderboard and a notebook compute the same numbers. Conventions shared by every function:

- An outcome is the first side's score in one comparison: 1 for a win, 0.5 for a tie, 0 for a
  loss. A win rate is the mean outcome, so a tie counts as half a win.
- Outcomes are grouped by prompt (a *cluster*): samples of one prompt are not independent, so
  intervals resample whole prompts (the cluster bootstrap, Davison & Hinkley 1997, sec. 3.8;
  Field & Welsh 2007), never single samples.
- Intervals are bootstrap percentile intervals (Efron & Tibshirani 1993, ch. 13) from
  ``RESAMPLES`` resamples drawn with a fixed ``seed``, so the same data give the same interval;
  percentiles interpolate linearly between order statistics (Hyndman & Fan 1996, type 7, as
  numpy's default).
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

# Bootstrap resamples per interval; the Monte Carlo error of a 95% percentile bound from 1,000
# resamples is well below the sampling error of a few hundred prompts (Efron & Tibshirani
# 1993, sec. 13.3).
RESAMPLES = 1000
# Seed of every bootstrap unless the caller names one: the same data give the same interval.
SEED = 0
# Coverage of the intervals.
LEVEL = 0.95
# Elo points per unit of Bradley-Terry log-strength: a 400-point gap means 10:1 odds.
ELO_SCALE = 400.0 / math.log(10.0)
# The rating given to the anchor player (the base model on the leaderboard).
ELO_BASE = 1000.0
# Virtual games each player plays against a virtual opponent of log-strength 0, half won and
# half lost, so that a player who never lost (common in small resamples) still gets a finite
# rating (Coulom 2008, "Whole-History Rating", sec. 2.3). 0 gives the maximum-likelihood fit.
PRIOR_GAMES = 2.0

_VERDICT_OUTCOMES = {"a": 1.0, "tie": 0.5, "b": 0.0}


def outcome(verdict: str) -> float:
    """The first side's score for a judge's verdict: ``"a"`` 1, ``"tie"`` 0.5, ``"b"`` 0."""
    try:
        return _VERDICT_OUTCOMES[verdict]
    except KeyError:
        raise ValueError(f"verdict must be 'a', 'b' or 'tie', got {verdict!r}") from None


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values`` by linear interpolation between order statistics
    (Hyndman & Fan 1996, definition 7)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (position - low) * (ordered[high] - ordered[low])


@dataclass(frozen=True)
class WinRate:
    """A win rate over prompts with its prompt-clustered bootstrap interval."""

    rate: float
    low: float
    high: float
    prompts: int  # clusters
    comparisons: int  # outcomes over all clusters

    @property
    def ci95(self) -> tuple[float, float]:
        return (self.low, self.high)


def _check_clusters(clusters: Sequence[Sequence[float]]) -> None:
    if not clusters or any(len(c) == 0 for c in clusters):
        raise ValueError("a win rate needs at least one prompt, each with at least one outcome")


def win_rate(clusters: Sequence[Sequence[float]]) -> float:
    """Mean outcome over every comparison of every prompt (ties count half).

    With the same number of samples per prompt this is also the mean of the per-prompt rates.
    """
    _check_clusters(clusters)
    return sum(sum(c) for c in clusters) / sum(len(c) for c in clusters)


def bootstrap_win_rate(
    clusters: Sequence[Sequence[float]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> WinRate:
    """Win rate with a prompt-clustered bootstrap percentile interval.

    Each resample draws as many prompts as there are, with replacement, and keeps all of a
    drawn prompt's outcomes together (the cluster bootstrap, Davison & Hinkley 1997,
    sec. 3.8); the statistic is the pooled mean outcome of the resample, and the interval is
    its ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles.

    Args:
        clusters: outcomes (1, 0.5, 0) per prompt.
    """
    _check_clusters(clusters)
    sums = [float(sum(c)) for c in clusters]
    counts = [len(c) for c in clusters]
    n = len(clusters)
    rng = random.Random(seed)
    indices = range(n)
    stats = []
    for _ in range(resamples):
        drawn = rng.choices(indices, k=n)
        stats.append(sum(sums[i] for i in drawn) / sum(counts[i] for i in drawn))
    tail = (1.0 - level) / 2.0
    return WinRate(
        rate=win_rate(clusters),
        low=percentile(stats, tail),
        high=percentile(stats, 1.0 - tail),
        prompts=n,
        comparisons=sum(counts),
    )


def paired_win_rate(
    verdicts: Sequence[Sequence[str]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> WinRate:
    """Win rate of version X over version Y from paired comparisons on the same prompts.

    ``verdicts[p][s]`` is the judge's verdict on prompt ``p`` between X's and Y's samples drawn
    with the same sampling seed ``s`` (``"a"``: X's is better), so the two versions meet on
    equal terms and prompt difficulty cancels out of each comparison. The interval resamples
    prompts (`bootstrap_win_rate`).
    """
    clusters = [[outcome(v) for v in row] for row in verdicts]
    return bootstrap_win_rate(clusters, resamples=resamples, seed=seed, level=level)


def length_controlled_win_rate(
    outcomes: Sequence[float], length_differences: Sequence[float]
) -> float | None:
    """The win rate the judge would give at equal lengths.

    Fits the linear probability model ``outcome = a + b * d`` by ordinary least squares, where
    ``d`` is the first side's length minus the second's, and returns the fitted outcome at
    ``d = 0`` (the intercept ``a``, clipped to [0, 1]). This is the regression idea of
    length-controlled AlpacaEval (Dubois et al. 2024, "Length-Controlled AlpacaEval", sec. 3),
    which fits a logistic model instead; the linear model is used here because ties score 0.5
    and because a rule that only looks at length (``longer``) separates the outcomes
    perfectly, where the logistic maximum-likelihood fit diverges while least squares stays
    finite. With ``b = 0`` it is the plain win rate.

    Returns:
        The rate, or None when every comparison has the same non-zero length difference (no
        comparison near equal length to learn from).
    """
    if len(outcomes) != len(length_differences):
        raise ValueError("one length difference per outcome")
    if not outcomes:
        raise ValueError("no outcomes")
    n = len(outcomes)
    mean_y = sum(outcomes) / n
    mean_d = sum(length_differences) / n
    sxx = sum((d - mean_d) ** 2 for d in length_differences)
    if sxx == 0.0:
        return mean_y if mean_d == 0.0 else None
    sxy = sum(
        (d - mean_d) * (y - mean_y) for d, y in zip(length_differences, outcomes, strict=True)
    )
    intercept = mean_y - (sxy / sxx) * mean_d
    return min(1.0, max(0.0, intercept))


# --- Bradley-Terry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Game:
    """One pairwise comparison between two players (model versions)."""

    first: str
    second: str
    score: float  # the first player's outcome: 1 win, 0.5 tie, 0 loss
    # Games with the same cluster (one prompt) are resampled together by the bootstrap.
    cluster: Hashable = None


@dataclass(frozen=True)
class Rating:
    """A player's Bradley-Terry rating on the Elo scale, with its bootstrap interval."""

    player: str
    rating: float
    low: float
    high: float
    games: int

    @property
    def ci95(self) -> tuple[float, float]:
        return (self.low, self.high)


def _players(games: Sequence[Game], players: Sequence[str] | None) -> list[str]:
    found = list(dict.fromkeys(p for g in games for p in (g.first, g.second)))
    if players is None:
        return found
    missing = sorted(set(found) - set(players))
    if missing:
        raise ValueError(f"games name players not listed: {', '.join(missing)}")
    return list(players)


def _win_matrix(games: Sequence[Game], index: dict[str, int]) -> np.ndarray:
    """``W[i, j]``: how many games ``i`` won against ``j``, a tie counting half to each."""
    wins = np.zeros((len(index), len(index)))
    for g in games:
        if not 0.0 <= g.score <= 1.0:
            raise ValueError(f"a game's score must lie in [0, 1], got {g.score}")
        if g.first == g.second:
            raise ValueError(f"a player cannot play itself: {g.first}")
        i, j = index[g.first], index[g.second]
        wins[i, j] += g.score
        wins[j, i] += 1.0 - g.score
    return wins


def _fit_log_strengths(
    wins: np.ndarray, prior: float, tol: float = 1e-9, max_iter: int = 200
) -> np.ndarray:
    """Bradley-Terry log-strengths by Newton-Raphson on the log-likelihood.

    Model: ``P(i beats j) = sigmoid(t_i - t_j)`` (Bradley & Terry 1952). With ``W_ij`` the
    games ``i`` won against ``j`` (ties half) and ``N_ij = W_ij + W_ji``, the log-likelihood
    ``sum_ij W_ij log sigmoid(t_i - t_j)`` is concave; this is the logistic regression that
    Agresti (2002, sec. 10.6) fits by Fisher scoring. ``prior`` adds virtual games, half won,
    against a virtual player of log-strength 0 (Coulom 2008), which makes the likelihood
    strictly concave and every fit finite. Without a prior the log-strengths are only defined
    up to a common shift, so the first is held at 0. Steps are capped at 2 log-units so that
    a fit far from its optimum cannot overshoot.

    Args:
        wins: ``(..., n, n)`` win matrices; leading axes are independent fits (resamples).

    Returns:
        ``(..., n)`` natural-log strengths.

    Raises:
        ValueError: no finite fit (without a prior: a player who won or lost every game, or
            players not connected by games).
    """
    n = wins.shape[-1]
    games = wins + np.swapaxes(wins, -1, -2)  # (..., n, n)
    theta = np.zeros(wins.shape[:-1])  # (..., n)
    free = slice(None) if prior > 0 else slice(1, None)  # the gauge: theta_0 = 0 without prior
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(theta[..., None, :] - theta[..., :, None]))  # (..., n, n) P(i>j)
        own = 1.0 / (1.0 + np.exp(-theta))  # (..., n) P(i beats the virtual player)
        gradient = (wins - games * p).sum(-1) + prior * (0.5 - own)  # (..., n)
        curvature = games * p * (1.0 - p)  # (..., n, n)
        diagonal = curvature.sum(-1) + prior * own * (1.0 - own)  # (..., n)
        # the negated Hessian: positive definite on the free coordinates
        information = np.eye(n) * diagonal[..., None] - curvature  # (..., n, n)
        try:
            step = np.linalg.solve(information[..., free, free], gradient[..., free, None])
            step = step[..., 0]  # (..., n free)
        except np.linalg.LinAlgError:
            break
        step = np.clip(step, -2.0, 2.0)
        theta[..., free] += step
        if not np.all(np.isfinite(theta)):
            break
        if float(np.max(np.abs(step), initial=0.0)) < tol:
            return theta
    raise ValueError(
        "the Bradley-Terry fit has no finite solution: without a prior, every player needs "
        "a win and a loss (or a tie) within one connected set of games"
    )


def _elo(log_strength: np.ndarray, anchor: int | None) -> np.ndarray:
    """Log-strengths to Elo points: the anchor at ``ELO_BASE``, else the mean at ``ELO_BASE``."""
    if anchor is None:
        centre = log_strength.mean(-1, keepdims=True)
    else:
        centre = log_strength[..., anchor : anchor + 1]
    return ELO_BASE + ELO_SCALE * (log_strength - centre)


def bradley_terry(
    games: Sequence[Game],
    *,
    players: Sequence[str] | None = None,
    anchor: str | None = None,
    prior: float = PRIOR_GAMES,
) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo scale (Bradley & Terry 1952; Hunter 2004).

    ``P(i beats j) = 1 / (1 + 10 ** ((R_j - R_i) / 400))``: the log-strengths of the model
    times ``400 / ln 10``, shifted so that ``anchor`` (or, without one, the players' mean)
    rates ``ELO_BASE``. A tie counts as half a win for each side.

    Args:
        players: the players to rate, in order; by default those that appear in ``games``.
        prior: virtual games per player (see `PRIOR_GAMES`); 0 gives the maximum-likelihood
            ratings.
    """
    names = _players(games, players)
    if not names:
        return {}
    index = {name: i for i, name in enumerate(names)}
    if anchor is not None and anchor not in index:
        raise ValueError(f"anchor {anchor!r} is not a player")
    log_strength = _fit_log_strengths(_win_matrix(games, index), prior)
    ratings = _elo(log_strength, None if anchor is None else index[anchor])
    return {name: float(ratings[i]) for name, i in index.items()}


def bootstrap_bradley_terry(
    games: Sequence[Game],
    *,
    players: Sequence[str] | None = None,
    anchor: str | None = None,
    prior: float = PRIOR_GAMES,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> list[Rating]:
    """`bradley_terry` ratings with cluster-bootstrap percentile intervals.

    Each resample draws the games' clusters (prompts) with replacement, keeping a cluster's
    games together, and refits; the interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` percentiles of each player's refitted rating. The anchor's rating is
    fixed by definition, so its interval is a point. A prior is required: some resamples leave
    a player unbeaten, whose maximum-likelihood rating is infinite.

    Returns:
        One `Rating` per player, in the order of ``players`` (or of first appearance).
    """
    if prior <= 0:
        raise ValueError("the bootstrap needs prior > 0")
    names = _players(games, players)
    if not names:
        return []
    point = bradley_terry(games, players=names, anchor=anchor, prior=prior)
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    clusters = list(dict.fromkeys(g.cluster for g in games))
    cluster_index = {c: k for k, c in enumerate(clusters)}
    # each cluster's own win matrix, flattened: (C, n * n)
    per_cluster = np.zeros((len(clusters), n * n))
    played = dict.fromkeys(names, 0)
    for g in games:
        i, j = index[g.first], index[g.second]
        row = per_cluster[cluster_index[g.cluster]]
        row[i * n + j] += g.score
        row[j * n + i] += 1.0 - g.score
        played[g.first] += 1
        played[g.second] += 1
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(clusters), size=(resamples, len(clusters)))  # (R, C)
    counts = np.zeros((resamples, len(clusters)))
    np.add.at(counts, (np.arange(resamples)[:, None], drawn), 1.0)
    wins = (counts @ per_cluster).reshape(resamples, n, n)  # (R, n, n)
    log_strength = _fit_log_strengths(wins, prior)  # (R, n)
    ratings = _elo(log_strength, None if anchor is None else index[anchor])  # (R, n)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(ratings, [tail, 100.0 - tail], axis=0)  # (n,), (n,)
    return [
        Rating(
            player=name,
            rating=point[name],
            low=float(low[i]),
            high=float(high[i]),
            games=played[name],
        )
        for name, i in index.items()
    ]
