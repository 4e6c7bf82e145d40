"""The project's quality figures from real rows, checked against sums done by hand."""

from __future__ import annotations

from collections import Counter
from unittest import mock

import pytest

from annotate.datasets.exporters import pseudonym
from annotate.quality import figures, stats
from annotate.quality.report import cache_key, quality_report
from tests.factories import CompletionFactory

from .helpers import judge


@pytest.fixture
def judged(team):
    """12 pairs, completion A always the longer; alice and bob judge all of them.

    alice: a a a a a a a a b b tie both_bad   (always shown A on the left)
    bob:   a a a a a a b b b b b   b          (shown A on the left on even pairs)
    """
    pairs = []
    for _ in range(12):
        comparison = team.pairs(1)[0]
        comparison.completion_a = CompletionFactory(prompt=comparison.prompt, text="long " * 10)
        comparison.completion_b = CompletionFactory(prompt=comparison.prompt, text="short")
        comparison.save()
        pairs.append(comparison)
    alice = ["a"] * 8 + ["b", "b", "tie", "both_bad"]
    bob = ["a"] * 6 + ["b"] * 6
    for i, c in enumerate(pairs):
        # alice: 5 s each, but one under the 2 s floor
        judge(team.alice, c, alice[i], left_is_a=True, duration_ms=500 if i == 0 else 5000)
        # bob: no client timing, so lease-to-submit (about 30 s) is used
        judge(team.bob, c, bob[i], left_is_a=i % 2 == 0, duration_ms=None, leased_seconds_ago=30)
    return team, pairs, alice, bob


def _by_name(report):
    return {row["annotator"]: row for row in report["annotators"]}


def test_it_computes_agreement_on_what_annotators_meant(judged):
    team, pairs, alice, bob = judged
    report = quality_report(team.project)
    agreement = report["agreement"]
    # Every pair has two judgments; they agree on 6 a/a and 2 b/b of 12.
    assert agreement["items"] == 12
    assert agreement["percent"] == pytest.approx(8 / 12)
    profiles = stats.count_profiles(zip(alice, bob, strict=True), figures.CATEGORIES)
    assert agreement["fleiss_kappa"] == pytest.approx(stats.fleiss_kappa(profiles))
    assert agreement["krippendorff_alpha"] == pytest.approx(
        stats.krippendorff_alpha_nominal(profiles)
    )
    lo, hi = agreement["fleiss_kappa_ci95"]
    assert lo <= agreement["fleiss_kappa"] <= hi
    # Cohen's kappa by hand: p_o = 8/12; alice's marginals a 8, b 2, tie 1, both_bad 1,
    # bob's a 6, b 6: p_e = (8*6 + 2*6) / 144 = 60/144.
    (cohen,) = agreement["cohen_kappa"]
    assert cohen["annotators"] == ["alice", "bob"]
    assert cohen["items"] == 12
    assert cohen["kappa"] == pytest.approx((8 / 12 - 60 / 144) / (1 - 60 / 144))
    assert len(cohen["kappa_ci95"]) == 2


def test_it_leaves_out_cohen_kappa_below_ten_shared_items(team):
    pairs = team.pairs(9)
    for c in pairs:
        judge(team.alice, c, "a")
        judge(team.bob, c, "a")
    report = quality_report(team.project)
    assert report["agreement"]["items"] == 9
    assert report["agreement"]["cohen_kappa"] == []
    # everyone agrees on one category: kappa and alpha are undefined, agreement is 1
    assert report["agreement"]["percent"] == 1.0
    assert report["agreement"]["fleiss_kappa"] is None
    assert report["agreement"]["fleiss_kappa_ci95"] is None


def test_it_measures_position_bias_on_the_side_shown(judged):
    team, pairs, alice, bob = judged
    rows = _by_name(quality_report(team.project))
    # alice saw A on the left every time: her 8 "a" are left, her 2 "b" right.
    assert (rows["alice"]["left"], rows["alice"]["right"]) == (8, 2)
    assert rows["alice"]["left_rate"] == pytest.approx(0.8)
    assert rows["alice"]["left_p_value"] == pytest.approx(stats.binomial_test(8, 10))
    # bob: pairs 0-5 "a" (left on even pairs: 0, 2, 4), pairs 6-11 "b" (left on odd: 7, 9, 11)
    assert (rows["bob"]["left"], rows["bob"]["right"]) == (6, 6)
    assert rows["bob"]["left_p_value"] == pytest.approx(1.0)
    project = quality_report(team.project)["project"]
    assert (project["left"], project["right"]) == (14, 8)
    assert project["left_p_value"] == pytest.approx(stats.binomial_test(14, 22))


def test_it_measures_length_bias_against_the_rest_of_the_team(judged):
    team, *_ = judged
    rows = _by_name(quality_report(team.project))
    # alice chose A (the longer) 8 times of 10 A/B choices; bob, on those same 10 pairs,
    # chose A on pairs 0-5 and B on 6-9: 6 of 10.
    assert rows["alice"]["longer_items"] == 10
    assert rows["alice"]["longer_win_rate"] == pytest.approx(0.8)
    assert rows["alice"]["team_longer_items"] == 10
    assert rows["alice"]["team_longer_win_rate"] == pytest.approx(0.6)
    # bob: 6 of 12; alice on his pairs where she was decisive: 8 of 10
    assert rows["bob"]["longer_win_rate"] == pytest.approx(0.5)
    assert rows["bob"]["team_longer_win_rate"] == pytest.approx(0.8)
    assert quality_report(team.project)["project"]["longer_win_rate"] == pytest.approx(14 / 22)


def test_it_times_judgments_and_flags_fast_ones(judged):
    team, *_ = judged
    report = quality_report(team.project)
    rows = _by_name(report)
    assert rows["alice"]["median_seconds"] == pytest.approx(5.0)
    assert rows["alice"]["fast_judgments"] == 1
    # no duration_ms: the time from lease to submit
    assert rows["bob"]["median_seconds"] == pytest.approx(30, abs=2)
    assert rows["bob"]["fast_judgments"] == 0
    team.project.fast_judgment_seconds = 10
    team.project.save()
    rows = _by_name(quality_report(team.project))
    assert rows["alice"]["fast_judgments"] == 12


def test_it_counts_gold_accuracy(judged):
    team, pairs, *_ = judged
    for c in pairs[:4]:  # alice: a a a a; bob: a a a a
        c.gold_choice = "a"
        c.save()
    pairs[8].gold_choice = "b"  # alice b, bob b
    pairs[8].save()
    pairs[11].gold_choice = "tie"  # alice both_bad, bob b
    pairs[11].save()
    rows = _by_name(quality_report(team.project))
    assert rows["alice"]["gold_items"] == 6
    assert rows["alice"]["gold_accuracy"] == pytest.approx(5 / 6)
    assert rows["bob"]["gold_accuracy"] == pytest.approx(5 / 6)
    project = quality_report(team.project)["project"]
    assert (project["gold_items"], project["gold_accuracy"]) == (12, pytest.approx(10 / 12))


def test_it_names_annotators_by_pseudonym_on_request(judged):
    team, *_ = judged
    report = quality_report(team.project, pseudonyms=True)
    names = {row["annotator"] for row in report["annotators"]}
    expected = {pseudonym(team.project, f"user:{u.pk}") for u in (team.alice, team.bob)}
    assert names == expected
    assert "alice" not in str(report["agreement"]["cohen_kappa"])
    assert set(report["agreement"]["cohen_kappa"][0]["annotators"]) == expected


def test_it_caches_the_figures_until_a_new_judgment(judged):
    team, pairs, *_ = judged
    quality_report(team.project)
    with mock.patch.object(figures, "compute", wraps=figures.compute) as compute:
        quality_report(team.project)
        assert compute.call_count == 0
        before = cache_key(team.project)
        judge(team.lead, pairs[0], "a")
        assert cache_key(team.project) != before
        report = quality_report(team.project)
        assert compute.call_count == 1
    assert report["judgments"] == 25


def test_undefined_figures_are_null_for_members_without_judgments(team):
    rows = _by_name(quality_report(team.project))
    assert rows["alice"]["judgments"] == 0
    assert rows["alice"]["left_rate"] is None and rows["alice"]["median_seconds"] is None
    assert rows["alice"]["flip_rate"] is None
    assert Counter(r["paused"] for r in rows.values()) == Counter({False: 2})


def test_cohen_intervals_share_a_replicate_budget():
    assert figures.cohen_replicates(1) == stats.BOOTSTRAP_REPLICATES
    assert figures.cohen_replicates(20) == 1000
    assert figures.cohen_replicates(190) == 105
    assert figures.cohen_replicates(5000) == 100
