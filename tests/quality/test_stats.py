"""The statistics against values computed independently (papers' worked examples, hand sums)."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest

from annotate.quality import stats

# Fleiss (1971), Table 1: 30 patients, 6 psychiatrists each, 5 diagnoses. Fleiss reports
# kappa = .430; R's irr::kappam.fleiss gives 0.4302445 on the same table.
FLEISS_1971 = [
    [4, 4, 4, 4, 4, 4],
    [2, 2, 2, 5, 5, 5],
    [2, 3, 3, 3, 3, 5],
    [5, 5, 5, 5, 5, 5],
    [2, 2, 2, 4, 4, 4],
    [1, 1, 3, 3, 3, 3],
    [3, 3, 3, 3, 5, 5],
    [1, 1, 3, 3, 3, 4],
    [1, 1, 4, 4, 4, 4],
    [5, 5, 5, 5, 5, 5],
    [1, 4, 4, 4, 4, 4],
    [1, 2, 4, 4, 4, 4],
    [2, 2, 2, 3, 3, 3],
    [1, 4, 4, 4, 4, 4],
    [2, 2, 4, 4, 4, 5],
    [3, 3, 3, 3, 3, 5],
    [1, 1, 1, 4, 5, 5],
    [1, 1, 1, 1, 1, 2],
    [2, 2, 4, 4, 4, 4],
    [1, 3, 3, 5, 5, 5],
    [5, 5, 5, 5, 5, 5],
    [2, 4, 4, 4, 4, 4],
    [2, 2, 4, 5, 5, 5],
    [1, 1, 4, 4, 4, 4],
    [1, 4, 4, 4, 4, 5],
    [2, 2, 2, 2, 2, 4],
    [1, 1, 1, 1, 5, 5],
    [2, 2, 4, 4, 4, 4],
    [1, 3, 3, 3, 3, 3],
    [5, 5, 5, 5, 5, 5],
]

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: 4 observers,
# 12 units, missing values as None; alpha (nominal) = 0.743.
K = None
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, K, K, K],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, K, 3],
    "C": [K, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, K],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, K],
}


def _units(coders: dict[str, list[int | None]]) -> list[list[int]]:
    n_units = len(next(iter(coders.values())))
    return [[c[u] for c in coders.values() if c[u] is not None] for u in range(n_units)]


def test_it_reproduces_fleiss_1971() -> None:
    profiles = stats.count_profiles(FLEISS_1971, [1, 2, 3, 4, 5])
    assert stats.n_items(profiles) == 30
    assert stats.fleiss_kappa(profiles) == pytest.approx(0.4302445, abs=1e-7)


def test_it_reproduces_the_wikipedia_fleiss_table() -> None:
    # 10 subjects, 14 raters, 5 categories; kappa = 0.210 (also statsmodels' test value).
    table = [
        (0, 0, 0, 0, 14),
        (0, 2, 6, 4, 2),
        (0, 0, 3, 5, 6),
        (0, 3, 9, 2, 0),
        (2, 2, 8, 1, 1),
        (7, 7, 0, 0, 0),
        (3, 2, 6, 3, 0),
        (2, 5, 3, 2, 2),
        (6, 5, 2, 1, 0),
        (0, 2, 2, 3, 7),
    ]
    profiles = Counter(table)
    assert stats.fleiss_kappa(profiles) == pytest.approx(0.20993, abs=5e-5)
    assert stats.percent_agreement(profiles) == pytest.approx(0.378, abs=5e-4)


def test_it_reproduces_krippendorff_2011() -> None:
    profiles = stats.count_profiles(_units(KRIPPENDORFF_2011), [1, 2, 3, 4, 5])
    # unit 12 has a single value and is not pairable
    assert stats.n_items(profiles) == 11
    assert stats.krippendorff_alpha_nominal(profiles) == pytest.approx(0.743, abs=5e-4)


def test_it_computes_cohen_kappa_on_a_2x2_table_by_hand() -> None:
    # 50 items: both "a" 20, a/b 5, b/a 10, both "b" 15. p_o = 35/50; marginals 25/25 and
    # 30/20, so p_e = (25*30 + 25*20) / 50^2 = 0.5 and kappa = (0.7 - 0.5) / 0.5 = 0.4.
    pairs = Counter({("a", "a"): 20, ("a", "b"): 5, ("b", "a"): 10, ("b", "b"): 15})
    assert stats.cohen_kappa(pairs) == pytest.approx(0.4)


def test_it_computes_cohen_kappa_on_a_3x3_table() -> None:
    # The SAS example statsmodels checks against (kappa 0.4842): p_o = 13/19,
    # p_e = (5*0 + 8*13 + 6*6) / 19^2, so kappa = (247 - 140) / (361 - 140) = 107/221.
    table = [[0, 4, 1], [0, 8, 0], [0, 1, 5]]
    pairs = Counter({(i, j): n for i, row in enumerate(table) for j, n in enumerate(row) if n})
    assert stats.cohen_kappa(pairs) == pytest.approx(107 / 221)
    assert round(stats.cohen_kappa(pairs), 4) == 0.4842


def test_undefined_statistics_are_none() -> None:
    assert stats.cohen_kappa(Counter()) is None
    assert stats.cohen_kappa(Counter({("a", "a"): 5})) is None
    everyone_agrees = Counter({(3, 0, 0, 0): 4})
    assert stats.fleiss_kappa(everyone_agrees) is None
    assert stats.krippendorff_alpha_nominal(everyone_agrees) is None
    assert stats.percent_agreement(everyone_agrees) == 1.0
    assert stats.percent_agreement(Counter()) is None


def test_alpha_and_kappa_agree_in_the_limit_and_cohen_matches_fleiss_shape() -> None:
    # With 2 raters and equal marginals, Fleiss' kappa equals Scott's pi, and alpha differs
    # from it only by the small-sample factor: alpha = 1 - (n-1)/n * (1 - pi), n = 2 * items.
    items = [["a", "a"]] * 30 + [["b", "b"]] * 30 + [["a", "b"]] * 10 + [["b", "a"]] * 10
    profiles = stats.count_profiles(items, ["a", "b"])
    pi = stats.fleiss_kappa(profiles)
    alpha = stats.krippendorff_alpha_nominal(profiles)
    n = 160
    assert pi == pytest.approx(0.5)
    assert alpha == pytest.approx(1 - (n - 1) / n * (1 - pi))


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (0, 10, 0.5, Fraction(2, 1024)),
        (10, 10, 0.5, Fraction(2, 1024)),
        (1, 5, 0.5, Fraction(12, 32)),  # 2 * (1 + 5) / 32
        (2, 10, 0.5, Fraction(112, 1024)),  # 2 * (1 + 10 + 45) / 1024
        (3, 6, 0.5, Fraction(1)),
        # Binomial(3, 0.2): pmf 0.512, 0.384, 0.096, 0.008
        (2, 3, 0.2, Fraction(104, 1000)),
        (1, 3, 0.2, Fraction(488, 1000)),
        (0, 3, 0.2, Fraction(1)),
    ],
)
def test_binomial_test_matches_closed_forms(k: int, n: int, p: float, expected: Fraction) -> None:
    assert stats.binomial_test(k, n, p) == pytest.approx(float(expected), rel=1e-9)


def test_binomial_test_on_a_larger_case_matches_exact_sums() -> None:
    n, k = 40, 13
    pmf = [Fraction(math.comb(n, i), 2**n) for i in range(n + 1)]
    expected = 2 * sum(pmf[: k + 1])
    assert stats.binomial_test(k, n) == pytest.approx(float(expected), rel=1e-9)
    assert stats.binomial_test(0, 0) is None
    with pytest.raises(ValueError):
        stats.binomial_test(5, 4)


def test_binomial_sampler_has_the_right_mean_and_variance() -> None:
    rng = random.Random(1)
    n, p = 5000, 0.3
    draws = [stats._binomial(rng, n, p) for _ in range(4000)]
    mean = sum(draws) / len(draws)
    var = sum((d - mean) ** 2 for d in draws) / (len(draws) - 1)
    assert mean == pytest.approx(n * p, abs=1.5)
    assert var == pytest.approx(n * p * (1 - p), rel=0.1)


def test_resampling_keeps_the_item_count() -> None:
    profiles = Counter({(2, 0): 700, (1, 1): 250, (0, 2): 50})
    out = stats._resample(random.Random(3), profiles)
    assert sum(out.values()) == 1000
    assert set(out) <= set(profiles)


def test_bootstrap_interval_is_reproducible_and_brackets_the_estimate() -> None:
    profiles = stats.count_profiles(FLEISS_1971, [1, 2, 3, 4, 5])
    ci = stats.bootstrap_ci(profiles, stats.fleiss_kappa)
    assert ci == stats.bootstrap_ci(profiles, stats.fleiss_kappa)
    assert ci is not None
    lo, hi = ci
    assert lo < 0.4302445 < hi
    # 30 items: the interval is wide, but not absurdly so
    assert 0.1 < hi - lo < 0.5
    assert stats.bootstrap_ci(Counter(), stats.fleiss_kappa) is None


def test_bootstrap_matches_a_plain_item_resampling_bootstrap() -> None:
    # The multinomial shortcut against the textbook bootstrap (draw items with replacement).
    items = [("a", "a")] * 40 + [("a", "b")] * 15 + [("b", "a")] * 5 + [("b", "b")] * 40
    rng = random.Random(7)
    plain = []
    for _ in range(2000):
        sample = Counter(rng.choice(items) for _ in items)
        value = stats.cohen_kappa(sample)
        if value is not None:
            plain.append(value)
    plain.sort()
    lo, hi = plain[50], plain[1949]
    ci = stats.bootstrap_ci(Counter(items), stats.cohen_kappa, replicates=2000)
    assert ci is not None
    assert ci[0] == pytest.approx(lo, abs=0.04)
    assert ci[1] == pytest.approx(hi, abs=0.04)


def _brute_force_p(k: int, n: int, p: float) -> float:
    """The minimum-likelihood p-value summed over every outcome, in exact fractions."""
    q = Fraction(p).limit_denominator(10**6)
    pmf = [math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(n + 1)]
    return float(sum(x for x in pmf if x <= pmf[k] * Fraction(10**7 + 1, 10**7)))


@pytest.mark.parametrize("p", [0.5, 0.3, 0.25, 0.9])
def test_binomial_test_tails_match_the_full_sum(p: float) -> None:
    rng = random.Random(11)
    for _ in range(25):
        n = rng.randint(1, 150)
        k = rng.randint(0, n)
        assert stats.binomial_test(k, n, p) == pytest.approx(_brute_force_p(k, n, p), rel=1e-9)


def test_binomial_test_on_a_large_n_sums_about_sqrt_n_terms_and_is_sane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    summed: list[int] = []
    fsum = math.fsum

    def counting_fsum(terms: Any) -> float:
        terms = list(terms)
        summed.append(len(terms))
        return fsum(terms)

    monkeypatch.setattr(stats.math, "fsum", counting_fsum)
    assert stats.binomial_test(500_000, 1_000_000) == pytest.approx(1.0, abs=1e-3)
    # 3 standard deviations above the mean: about 0.0027 two-sided
    assert stats.binomial_test(501_500, 1_000_000) == pytest.approx(0.0027, rel=0.05)
    assert stats.binomial_test(0, 1_000_000) == 0.0
    # the work, counted rather than timed: each tail stops once its terms vanish, about nine
    # standard deviations (500 here) from where it starts, far short of the n terms it spans
    assert summed and max(summed) <= 20 * 500
