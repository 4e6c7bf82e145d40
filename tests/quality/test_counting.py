"""The counting rule through the one judgments -> pairs path: who is left out, and the weights."""

from __future__ import annotations

from typing import Any

import pytest

from annotate.datasets import counting
from annotate.datasets.labels import PairOptions, preference_pairs
from annotate.models import Comparison, Membership
from annotate.quality import figures
from tests.factories import ComparisonFactory, MembershipFactory, UserFactory

from .helpers import judge

TRAIN = [Comparison.Kind.TRAIN]


@pytest.fixture
def crew(team: Any) -> dict[str, Any]:
    """alice: gold 2/2; bob: gold 1/2; dave: one gold pair (no established accuracy); carol is
    paused. Two gold pairs are needed before an accuracy counts; under 2 s is fast."""
    project = team.project
    project.gold_min_items = 2
    project.fast_judgment_seconds = 2.0
    project.save()
    carol, dave = UserFactory(username="carol"), UserFactory(username="dave")
    MembershipFactory(project=project, user=carol, paused=True)
    MembershipFactory(project=project, user=dave)
    g1, g2 = (
        ComparisonFactory(project=project, kind=Comparison.Kind.GOLD, gold_choice="a")
        for _ in range(2)
    )
    for user, choices in ((team.alice, "aa"), (team.bob, "ba"), (dave, "a")):
        for comparison, choice in zip((g1, g2), choices, strict=False):
            judge(user, comparison, choice)
    return {"project": project, "alice": team.alice, "bob": team.bob, "carol": carol, "dave": dave}


def _pair(project: Any, *votes: tuple[Any, str], **timing: Any) -> Comparison:
    comparison = ComparisonFactory(project=project)
    for user, choice in votes:
        judge(user, comparison, choice, **timing.get(user.username, {}))
    return comparison


def _labels(project: Any, **options: Any) -> dict[int, str]:
    rows = preference_pairs(project, PairOptions(kinds=TRAIN, include_ties=True, **options))
    return {row["comparison_id"]: row["label"] for row in rows}


def test_paused_and_low_gold_annotators_are_left_out(crew):
    project, alice, bob, carol = crew["project"], crew["alice"], crew["bob"], crew["carol"]
    p1 = _pair(project, (alice, "a"), (bob, "b"), (carol, "b"))
    p2 = _pair(project, (carol, "a"))
    assert _labels(project) == {p1.pk: "b", p2.pk: "a"}
    project.count_skip_paused = True
    project.save()
    assert _labels(project) == {p1.pk: "tie"}  # alice a, bob b; carol's pair gives none
    project.count_min_gold_accuracy = 0.8  # bob's 50% is below; dave has too little gold
    project.save()
    assert _labels(project) == {p1.pk: "a"}
    # the export options override the project's rule, each on its own
    assert _labels(project, skip_paused=False) == {p1.pk: "tie", p2.pk: "a"}  # alice a, carol b
    assert _labels(project, min_gold_accuracy=0.0) == {p1.pk: "tie"}
    assert _labels(project, min_gold_accuracy=0.5) == {p1.pk: "tie"}  # 50% is not below 50%


def test_an_annotator_without_enough_gold_is_not_judged_on_it(crew):
    project, dave = crew["project"], crew["dave"]
    project.count_min_gold_accuracy = 1.0
    project.save()
    p = _pair(project, (dave, "b"))  # dave: 1 gold pair < gold_min_items
    assert _labels(project) == {p.pk: "b"}
    project.gold_min_items = 1
    project.save()
    assert _labels(project) == {p.pk: "b"}  # 1/1 right: not below 100%


def test_fast_judgments_are_left_out_by_duration_or_lease_time(crew):
    project, alice, bob, dave = crew["project"], crew["alice"], crew["bob"], crew["dave"]
    by_duration = _pair(project, (alice, "a"), (dave, "b"), alice={"duration_ms": 1999})
    by_lease = _pair(
        project,
        (alice, "b"),
        (bob, "a"),
        alice={"duration_ms": None, "leased_seconds_ago": 1},
    )
    slow = _pair(project, (alice, "a"), alice={"duration_ms": None, "leased_seconds_ago": 30})
    assert _labels(project) == {by_duration.pk: "tie", by_lease.pk: "tie", slow.pk: "a"}
    project.count_skip_fast = True
    project.save()
    assert _labels(project) == {by_duration.pk: "b", by_lease.pk: "a", slow.pk: "a"}
    rule = PairOptions(kinds=TRAIN).counting(project)
    assert rule.left_out(project.judgments.all()) == {"fast": 2}
    # the same judgments the quality page flags as fast
    flagged = figures.compute(project)["project"]["fast_judgments"]
    assert flagged == 2


def test_left_out_judgments_are_counted_under_their_first_reason(crew):
    project, bob, carol = crew["project"], crew["bob"], crew["carol"]
    Membership.objects.filter(project=project, user=bob).update(paused=True)
    _pair(project, (bob, "a"), (carol, "a"), bob={"duration_ms": 100})
    project.count_skip_paused = project.count_skip_fast = True
    project.count_min_gold_accuracy = 0.9
    project.save()
    rule = counting.resolve(project)
    # bob: paused, low gold and fast; his two gold judgments and this one count as paused
    assert rule.left_out(project.judgments.all()) == {"paused": 4}
    assert rule.left_out(project.judgments.filter(annotator=crew["alice"])) == {}


def test_pairs_are_weighted_by_agreement_and_by_gold_accuracy(crew):
    project, alice, bob, carol, dave = (
        crew[k] for k in ("project", "alice", "bob", "carol", "dave")
    )
    both = _pair(project, (alice, "a"), (bob, "a"))
    unknown = _pair(project, (alice, "b"), (dave, "b"))
    nobody = _pair(project, (carol, "a"))
    split = _pair(project, (alice, "a"), (bob, "a"), (dave, "b"))
    minority = _pair(project, (bob, "b"), (dave, "b"), (alice, "a"))

    def weights(**options: Any) -> dict[int, float]:
        rows = preference_pairs(project, PairOptions(kinds=TRAIN, **options))
        return {row["comparison_id"]: row["weight"] for row in rows}

    assert set(weights().values()) == {1.0}
    by_agreement = weights(weight="agreement")
    assert by_agreement[both.pk] == 1.0 and by_agreement[split.pk] == pytest.approx(2 / 3)
    project.count_weight = "gold_accuracy"
    project.save()
    # alice 2/2 = 1.0, bob 1/2 = 0.5; dave (one gold pair) and carol (none) are not established
    assert weights() == pytest.approx(
        {
            both.pk: (1.0 + 0.5) / 2,
            unknown.pk: 1.0,  # alice alone is known
            nobody.pk: 1.0,  # no voter of the label has an accuracy
            split.pk: (1.0 + 0.5) / 2,  # dave voted for the loser
            minority.pk: 0.5,  # bob and dave won: only bob is known
        }
    )
    assert weights(weight="uniform") == dict.fromkeys(weights(), 1.0)


def test_bad_rule_options_are_refused_naming_the_option():
    from annotate.errors import InvalidInput

    with pytest.raises(InvalidInput, match='"min_gold_accuracy"'):
        PairOptions.from_dict({"min_gold_accuracy": "1.5"})
    with pytest.raises(InvalidInput, match='"min_gold_accuracy"'):
        PairOptions.from_dict({"min_gold_accuracy": "lots"})
    with pytest.raises(InvalidInput, match='"skip_fast"'):
        PairOptions.from_dict({"skip_fast": "maybe"})
    with pytest.raises(InvalidInput, match='"weight"'):
        PairOptions.from_dict({"weight": "heavy"})
    options = PairOptions.from_dict({"skip_paused": "false", "skip_fast": "", "weight": ""})
    assert (options.skip_paused, options.skip_fast, options.weight) == (False, None, "")
