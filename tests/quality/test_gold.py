"""The gold pause rule, through the service functions an annotator and a lead call."""

from __future__ import annotations

import uuid

import pytest

from annotate import services
from annotate.errors import InvalidInput, NotAllowed, NotFound
from annotate.models import Comparison, Membership
from annotate.quality import gold

from .helpers import judge, judge_next


@pytest.fixture
def gold_team(team):
    """Three gold pairs (right answer "a") served ahead of three ordinary ones; pause below 70%
    after three gold pairs. Overlap 2, so that both annotators meet the gold pairs."""
    project = team.project
    project.overlap = 2
    project.gold_min_items = 3
    project.gold_min_accuracy = 0.7
    project.gold_rate = 1.0  # gold first, while ordinary pairs are left
    project.save()
    pairs = team.pairs(6)
    for c in pairs[:3]:
        gold.mark_gold(team.lead, project, c.pk, "a")
    return team, pairs


def _membership(team, user):
    return Membership.objects.get(project=team.project, user=user)


def test_an_annotator_failing_gold_is_paused_and_told_why(gold_team):
    team, pairs = gold_team
    judge_next(team.alice, team.project, "b")
    judge_next(team.alice, team.project, "a")
    assert not _membership(team, team.alice).paused
    judge_next(team.alice, team.project, "b")  # 1 of 3 right: 33% < 70%
    membership = _membership(team, team.alice)
    assert membership.paused
    assert "1 of your last 3 gold pairs" in membership.paused_reason
    with pytest.raises(NotAllowed, match="paused"):
        services.next_assignment(team.project, team.alice)
    # bob is not affected
    assert services.next_assignment(team.project, team.bob) is not None


def test_an_annotator_passing_gold_keeps_going(gold_team):
    team, pairs = gold_team
    for meant in ("a", "a", "b"):  # 2 of 3: 67% < 70%: paused
        judge_next(team.bob, team.project, meant)
    assert _membership(team, team.bob).paused
    for meant in ("a", "a", "a"):
        judge_next(team.alice, team.project, meant)
    assert not _membership(team, team.alice).paused
    assert services.next_assignment(team.project, team.alice) is not None


def test_no_pause_before_the_minimum_number_of_gold_pairs(gold_team):
    team, pairs = gold_team
    judge_next(team.alice, team.project, "b")
    judge_next(team.alice, team.project, "b")
    assert not _membership(team, team.alice).paused


def test_a_lead_resumes_and_the_rule_counts_afresh(gold_team):
    team, pairs = gold_team
    for _ in range(3):
        judge_next(team.alice, team.project, "b")
    assert _membership(team, team.alice).paused
    with pytest.raises(NotAllowed):
        gold.resume(team.alice, team.project, "alice")
    gold.resume(team.lead, team.project, "alice")
    membership = _membership(team, team.alice)
    assert not membership.paused and membership.paused_reason == ""
    assert services.next_assignment(team.project, team.alice) is not None
    # a new gold pair judged wrong after the resume: the rule counts 1 gold item since, which
    # is below the minimum, although all four of alice's gold judgments are wrong
    extra = team.pairs(1)[0]
    gold.mark_gold(team.lead, team.project, extra.pk, "a")
    judge(team.alice, extra, "b")
    assert gold.gold_record(team.project, team.alice.pk) == (4, 0)
    assert gold.gold_record(team.project, team.alice.pk, since=membership.resumed_at) == (1, 0)
    assert gold.apply_rule(team.project, team.alice.pk) is False


def test_marking_gold_after_the_fact_applies_the_rule(team):
    project = team.project
    project.gold_min_items = 2
    project.gold_min_accuracy = 0.5
    project.save()
    pairs = team.pairs(2)
    for c in pairs:
        judge(team.alice, c, "tie")
    assert not _membership(team, team.alice).paused
    gold.mark_gold(team.lead, project, pairs[0].pk, "a")
    assert not _membership(team, team.alice).paused
    gold.mark_gold(team.lead, project, pairs[1].pk, "b")
    assert _membership(team, team.alice).paused
    pairs[1].refresh_from_db()
    assert (pairs[1].kind, pairs[1].gold_choice) == (Comparison.Kind.GOLD, "b")


def test_only_leads_mark_gold_with_a_valid_answer(team):
    (c,) = team.pairs(1)
    with pytest.raises(NotAllowed):
        gold.mark_gold(team.alice, team.project, c.pk, "a")
    with pytest.raises(NotFound):
        gold.mark_gold(team.outsider, team.project, c.pk, "a")
    with pytest.raises(InvalidInput, match="answer"):
        gold.mark_gold(team.lead, team.project, c.pk, "left")
    c.refresh_from_db()
    assert c.gold_choice == "" and c.kind == Comparison.Kind.TRAIN
    gold.mark_gold(team.lead, team.project, c.pk, "both_bad")
    gold.unmark_gold(team.lead, team.project, c.pk)
    c.refresh_from_db()
    assert c.gold_choice == "" and c.kind == Comparison.Kind.TRAIN


def test_a_comparison_of_another_project_is_not_found(team):
    from tests.factories import ComparisonFactory, ProjectFactory

    elsewhere = ComparisonFactory(project=ProjectFactory())
    with pytest.raises(NotFound):
        gold.mark_gold(team.lead, team.project, elsewhere.pk, "a")


def test_a_lead_pauses_by_hand_with_a_reason(team):
    with pytest.raises(InvalidInput, match="reason"):
        gold.pause(team.lead, team.project, "alice", "  ")
    with pytest.raises(NotFound):
        gold.pause(team.lead, team.project, "nobody", "why")
    gold.pause(team.lead, team.project, "alice", "Please re-read the instructions.")
    with pytest.raises(NotAllowed, match="re-read the instructions"):
        services.next_assignment(team.project, team.alice)


def test_thresholds_are_project_settings_with_bounds(team):
    services.update_project(
        team.lead,
        team.project,
        {"gold_min_items": 20, "gold_min_accuracy": 0.8, "fast_judgment_seconds": 1.5},
    )
    team.project.refresh_from_db()
    assert (team.project.gold_min_items, team.project.gold_min_accuracy) == (20, 0.8)
    for field, value in (
        ("gold_min_accuracy", 1.5),
        ("gold_min_items", 0),
        ("fast_judgment_seconds", -1),
    ):
        with pytest.raises(InvalidInput, match=field):
            services.update_project(team.lead, team.project, {field: value})
    team.project.refresh_from_db()
    assert team.project.gold_min_accuracy == 0.8


def test_a_replayed_gold_judgment_does_not_count_twice(gold_team):
    team, pairs = gold_team
    assignment = services.next_assignment(team.project, team.alice)
    data = services.JudgmentInput(choice="tie", client_id=uuid.uuid4())
    services.submit_judgment(team.alice, assignment.comparison_id, data)
    services.submit_judgment(team.alice, assignment.comparison_id, data)
    assert gold.gold_record(team.project, team.alice.pk) == (1, 0)
