"""The evaluation statistics against values worked out by hand or published."""

from __future__ import annotations

import math

import pytest

from training.core.stats import (
    ELO_SCALE,
    Game,
    bootstrap_bradley_terry,
    bootstrap_win_rate,
    bradley_terry,
    length_controlled_win_rate,
    outcome,
    paired_win_rate,
    percentile,
    win_rate,
)


def test_it_scores_a_tie_as_half_a_win() -> None:
    assert [outcome(v) for v in ("a", "tie", "b")] == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="verdict"):
        outcome("left")


def test_it_pools_outcomes_over_prompts() -> None:
    # (1 + 0.5) + (0 + 0) + (1 + 1) = 3.5 over 6 comparisons
    assert win_rate([[1, 0.5], [0, 0], [1, 1]]) == pytest.approx(3.5 / 6)


def test_it_interpolates_percentiles_linearly() -> None:
    # position 0.25 * 3 = 0.75 between 1 and 2; position 0.5 * 4 = 2 is the middle value
    assert percentile([4, 1, 3, 2], 0.25) == pytest.approx(1.75)
    assert percentile([5, 1, 4, 2, 3], 0.5) == 3


def test_it_resamples_whole_prompts() -> None:
    """Five prompts, three won and two lost, with four samples each.

    A resample of five prompts wins X ~ Binomial(5, 0.6) of them. P(X = 0) = 0.010 and
    P(X <= 1) = 0.087, so the 2.5% point is 1/5 = 0.2; P(X = 5) = 0.078 > 0.025, so the
    97.5% point is 1.0. Resampling the 20 samples as if independent would give
    Binomial(20, 0.6) / 20 instead: P(X <= 7) = 0.021 and P(X <= 8) = 0.057 put the 2.5% point
    at 0.4, P(X >= 16) = 0.051 and P(X >= 17) = 0.016 the 97.5% point at 0.8: too narrow.
    """
    clustered = bootstrap_win_rate([[1.0] * 4] * 3 + [[0.0] * 4] * 2)
    assert (clustered.rate, clustered.ci95) == (0.6, (0.2, 1.0))
    assert (clustered.prompts, clustered.comparisons) == (5, 20)
    independent = bootstrap_win_rate([[1.0]] * 12 + [[0.0]] * 8)
    assert independent.ci95 == (0.4, 0.8)


def test_it_gives_the_same_interval_for_the_same_seed() -> None:
    data = [[1.0, 0.5], [0.0, 1.0], [0.5, 0.5], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert bootstrap_win_rate(data, seed=3) == bootstrap_win_rate(data, seed=3)
    assert bootstrap_win_rate(data, seed=3).rate == bootstrap_win_rate(data, seed=4).rate


def test_it_gives_a_point_interval_when_every_prompt_agrees() -> None:
    result = bootstrap_win_rate([[1.0, 0.5]] * 10)
    assert result.ci95 == (0.75, 0.75)


def test_it_pairs_verdicts_of_the_same_prompt_and_seed() -> None:
    result = paired_win_rate([["a", "tie"], ["b", "b"], ["a", "a"]])
    assert result.rate == pytest.approx(3.5 / 6)
    assert (result.prompts, result.comparisons) == (3, 6)
    assert result.low <= result.rate <= result.high


def test_it_refuses_an_empty_win_rate() -> None:
    with pytest.raises(ValueError):
        bootstrap_win_rate([])
    with pytest.raises(ValueError):
        win_rate([[1.0], []])


def test_it_reads_the_length_controlled_rate_at_equal_length() -> None:
    """outcome = a + b * d by least squares on d = (0, 2, 4), y = (1, 0, 0.5):
    mean d = 2, mean y = 0.5, Sxy = (-2)(0.5) + 0 + (2)(0) = -1, Sxx = 8, so b = -1/8 and
    a = 0.5 + 2/8 = 0.75."""
    assert length_controlled_win_rate([1.0, 0.0, 0.5], [0.0, 2.0, 4.0]) == pytest.approx(0.75)


def test_it_removes_a_win_bought_by_length() -> None:
    """The longer side mostly wins and ties at equal length: raw 0.7, but at d = 0 about 0.5.

    d = (3, 1, 2, -2, 0), y = (1, 1, 1, 0, 0.5): mean d = 0.8, mean y = 0.7,
    Sxx = 4.84 + 0.04 + 1.44 + 7.84 + 0.64 = 14.8,
    Sxy = 0.66 + 0.06 + 0.36 + 1.96 + 0.16 = 3.2, so a = 0.7 - 0.8 * 3.2 / 14.8 = 39 / 74.
    """
    outcomes = [1.0, 1.0, 1.0, 0.0, 0.5]
    diffs = [3.0, 1.0, 2.0, -2.0, 0.0]
    assert win_rate([outcomes]) == pytest.approx(0.7)
    assert length_controlled_win_rate(outcomes, diffs) == pytest.approx(39 / 74)


def test_it_handles_degenerate_length_differences() -> None:
    # all at equal length: the plain win rate
    assert length_controlled_win_rate([1.0, 0.5, 0.0, 1.0], [0.0] * 4) == pytest.approx(0.625)
    # all at the same non-zero difference: nothing to learn from
    assert length_controlled_win_rate([1.0, 0.0], [3.0, 3.0]) is None
    # y = d exactly gives a = -1: clipped to 0
    assert length_controlled_win_rate([0.0, 1.0], [1.0, 2.0]) == 0.0


# Agresti (2002), Categorical Data Analysis, 2nd ed., Table 10.10: games won by the row team
# against the column team, 1987 American League East (13 games per pair). The same data ship
# with the R package BradleyTerry2 (data set `baseball`, home and away games kept apart).
TEAMS = ["Milwaukee", "Detroit", "Toronto", "New York", "Boston", "Cleveland", "Baltimore"]
WINS = [
    [0, 7, 9, 7, 7, 9, 11],
    [6, 0, 7, 5, 11, 9, 9],
    [4, 6, 0, 7, 7, 8, 12],
    [6, 8, 6, 0, 6, 7, 10],
    [6, 2, 6, 7, 0, 7, 12],
    [4, 4, 5, 6, 6, 0, 6],
    [2, 4, 1, 3, 1, 7, 0],
]
# Maximum-likelihood log-strengths with Baltimore at 0: Agresti's Table 10.11 gives them to two
# decimals (1.58, 1.44, 1.29, 1.25, 1.11, 0.68); BradleyTerry2's BTm fit (tests/baseball.Rout.save
# in that package) prints four.
PUBLISHED = {
    "Milwaukee": 1.5814,
    "Detroit": 1.4364,
    "Toronto": 1.2945,
    "New York": 1.2476,
    "Boston": 1.1077,
    "Cleveland": 0.6839,
    "Baltimore": 0.0,
}


def _baseball_games() -> list[Game]:
    games = []
    for i, winner in enumerate(TEAMS):
        for j, loser in enumerate(TEAMS):
            games.extend(Game(winner, loser, 1.0, cluster=(i, j, k)) for k in range(WINS[i][j]))
    return games


def test_it_fits_agrestis_baseball_example() -> None:
    ratings = bradley_terry(_baseball_games(), anchor="Baltimore", prior=0.0)
    assert ratings["Baltimore"] == 1000.0
    for team, beta in PUBLISHED.items():
        assert (ratings[team] - 1000.0) / ELO_SCALE == pytest.approx(beta, abs=5e-5), team


def test_it_puts_the_bradley_terry_model_on_the_elo_scale() -> None:
    # 3 wins to 1: odds 3, so 400 * log10(3) = 190.85 Elo points apart
    games = [Game("v1", "base", 1.0)] * 3 + [Game("v1", "base", 0.0)]
    ratings = bradley_terry(games, anchor="base", prior=0.0)
    assert ratings == {"v1": pytest.approx(1000 + 400 * math.log10(3)), "base": 1000.0}
    # without an anchor the mean is 1000
    centred = bradley_terry(games, prior=0.0)
    assert centred["v1"] + centred["base"] == pytest.approx(2000.0)


def test_it_counts_a_tie_as_half_a_win_for_each_side() -> None:
    # 2 wins and 2 ties score 3 to 1, like 3 wins and 1 loss
    ties = [Game("v1", "base", 1.0)] * 2 + [Game("base", "v1", 0.5)] * 2
    wins = [Game("v1", "base", 1.0)] * 3 + [Game("base", "v1", 1.0)]
    assert bradley_terry(ties, anchor="base") == pytest.approx(bradley_terry(wins, anchor="base"))


def test_it_shrinks_towards_equal_with_the_prior() -> None:
    games = [Game("v1", "base", 1.0)] * 3 + [Game("v1", "base", 0.0)]
    mle = bradley_terry(games, anchor="base", prior=0.0)["v1"]
    shrunk = bradley_terry(games, anchor="base", prior=2.0)["v1"]
    assert 1000.0 < shrunk < mle
    # an unbeaten player has no finite maximum-likelihood rating, but a finite prior one
    unbeaten = [Game("v1", "base", 1.0)] * 3
    with pytest.raises(ValueError, match="no finite"):
        bradley_terry(unbeaten, prior=0.0)
    assert math.isfinite(bradley_terry(unbeaten, anchor="base")["v1"])


def test_it_bootstraps_ratings_over_clusters() -> None:
    games = _baseball_games()
    ratings = bootstrap_bradley_terry(games, anchor="Baltimore", resamples=200)
    by_team = {r.player: r for r in ratings}
    assert [r.player for r in ratings] == TEAMS
    assert by_team["Baltimore"].ci95 == (1000.0, 1000.0)
    for r in ratings:
        assert r.low <= r.rating <= r.high
        assert r.games == 78
    # standard errors of about 0.3 log-units (Agresti, sec. 10.6): intervals about
    # +-2 * 0.3 * 173.7 = +-104 Elo points wide
    width = by_team["Milwaukee"].high - by_team["Milwaukee"].low
    assert 120 < width < 300
    again = bootstrap_bradley_terry(games, anchor="Baltimore", resamples=200)
    assert again == ratings


def test_it_needs_a_prior_to_bootstrap() -> None:
    with pytest.raises(ValueError, match="prior"):
        bootstrap_bradley_terry([Game("a", "b", 1.0), Game("a", "b", 0.0)], prior=0.0)
