"""Gold pairs in the queue: served to every annotator beyond the overlap, at the project's rate,
never counted as work toward the overlap."""

from __future__ import annotations

import uuid
from typing import Any

from annotate import services
from annotate.datasets.imports import gold_answer
from annotate.models import Comparison
from tests.factories import ComparisonFactory


def judge(user: Any, team: Any) -> Comparison:
    assignment = services.next_assignment(team.project, user)
    assert assignment is not None
    data = services.JudgmentInput(choice="left", client_id=uuid.uuid4())
    services.submit_judgment(user, assignment.comparison_id, data)
    return assignment.comparison


def gold_pair(team: Any, answer: str = "a") -> Comparison:
    return ComparisonFactory(project=team.project, kind=Comparison.Kind.GOLD, gold_choice=answer)


def test_gold_goes_to_every_annotator_beyond_the_overlap(team: Any) -> None:
    team.project.gold_rate = 1.0
    team.project.save()
    gold = gold_pair(team)
    team.pairs(3)
    # overlap is 1: the first judgment closes an ordinary pair, but not a gold one
    assert judge(team.alice, team) == gold
    assert judge(team.bob, team) == gold
    assert judge(team.lead, team) == gold
    assert Comparison.objects.get(pk=gold.pk).judgment_count == 3
    # with gold judged, everyone goes on with the ordinary pairs
    assert judge(team.alice, team).kind == Comparison.Kind.TRAIN


def test_a_rate_of_zero_never_serves_gold_and_gold_is_not_work_left(team: Any) -> None:
    team.project.gold_rate = 0.0
    team.project.save()
    gold = gold_pair(team)
    ordinary = team.pairs(2)
    assert services.progress(team.project, team.alice).mine_remaining == 2
    assert services.progress(team.project, team.alice).project_total == 2
    served = {judge(team.alice, team).pk, judge(team.alice, team).pk}
    assert served == {p.pk for p in ordinary} and gold.pk not in served
    # nothing ordinary is left: gold alone does not keep anyone's queue open
    assert services.next_assignment(team.project, team.alice) is None


def test_gold_mixes_in_at_about_the_rate(team: Any) -> None:
    team.project.gold_rate = 0.25
    team.project.gold_min_accuracy = 0.0  # this test picks sides blindly: no pausing
    team.project.save()
    for _ in range(40):
        gold_pair(team)
    team.pairs(200)
    served = [judge(team.alice, team).kind for _ in range(120)]
    gold_share = served.count(Comparison.Kind.GOLD) / len(served)
    # 120 draws at p=0.25: the share lies within 0.25 +- 0.12 with probability > 0.99
    assert 0.13 <= gold_share <= 0.37


def test_a_round_asked_for_gets_only_its_pairs(team: Any) -> None:
    team.project.gold_rate = 1.0
    team.project.save()
    gold_pair(team)
    mine = ComparisonFactory(project=team.project, round=1)
    assignment = services.next_assignment(team.project, team.alice, round_number=1)
    assert assignment is not None and assignment.comparison_id == mine.pk


def test_gold_without_an_answer_is_served_like_any_pair(team: Any) -> None:
    team.project.gold_rate = 0.0
    team.project.save()
    unanswered = ComparisonFactory(project=team.project, kind=Comparison.Kind.GOLD)
    assert judge(team.alice, team) == unanswered


def test_imported_gold_takes_its_votes_answer_when_they_agree() -> None:
    assert gold_answer("gold", ["a", "a"]) == "a"
    assert gold_answer("gold", ["a", "b"]) == ""
    assert gold_answer("gold", []) == ""
    assert gold_answer("train", ["b"]) == ""
