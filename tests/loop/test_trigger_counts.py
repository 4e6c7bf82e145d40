"""A judgment counts itself into its round's progress; the round's pairs are recounted only when
that count says the trigger may have fired (``training.services.triggers``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotate import services
from annotate.models import Comparison
from tests.factories import ComparisonFactory
from training.models import ModelVersion, Round
from training.services import triggers


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rounds whose training started (the training itself is not run)."""
    calls: list[int] = []
    monkeypatch.setattr(triggers, "begin_training", lambda loop_round: calls.append(loop_round.pk))
    return calls


def _collecting(team: Any, pairs: int, trigger: str = "all_judged", **settings: Any) -> Round:
    project = team.project
    base = ModelVersion.objects.create(project=project, number=0, spec="demo", state="serving")
    for _ in range(pairs):
        ComparisonFactory(project=project, round=1)
    # As generation leaves it: nothing judged yet, every pair times the overlap to go.
    return Round.objects.create(
        project=project,
        number=1,
        policy=base,
        state=Round.State.COLLECTING,
        settings={"trigger": trigger, **settings},
        progress_total=pairs * project.overlap,
    )


def _judge(user: Any, capture: Any) -> int:
    assignment = services.next_assignment(user.memberships.first().project, user)
    with capture(execute=True):
        services.submit_judgment(
            user, assignment.comparison_id, services.JudgmentInput("left", uuid.uuid4())
        )
    return assignment.comparison_id


def test_it_starts_training_on_the_judgment_that_completes_the_round(
    team: Any, started: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    loop_round = _collecting(team, pairs=3)
    _judge(team.alice, django_capture_on_commit_callbacks)
    _judge(team.alice, django_capture_on_commit_callbacks)
    assert started == []
    assert Round.objects.get(pk=loop_round.pk).progress_done == 2
    _judge(team.alice, django_capture_on_commit_callbacks)
    assert started == [loop_round.pk]


def test_a_judgment_far_from_the_trigger_reads_none_of_the_rounds_pairs(
    team: Any, started: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    _collecting(team, pairs=5)
    assignment = services.next_assignment(team.project, team.alice)
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.submit_judgment(
            team.alice, assignment.comparison_id, services.JudgmentInput("left", uuid.uuid4())
        )
    recounts = [
        q["sql"]
        for q in queries.captured_queries
        if '"annotate_comparison"."round"' in q["sql"]
        and ("SUM(" in q["sql"] or "COUNT(" in q["sql"])
    ]
    assert recounts == []
    assert started == []


def test_a_count_run_ahead_by_an_undo_is_recounted_and_never_starts_training_early(
    team: Any, started: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    loop_round = _collecting(team, pairs=2)
    first = _judge(team.alice, django_capture_on_commit_callbacks)
    services.undo_judgment(team.alice, project=team.project)
    assert Comparison.objects.get(pk=first).judgment_count == 0
    # The undone pair is leased to alice again; bob judges the other one, which the count
    # (two) takes for the last.
    _judge(team.bob, django_capture_on_commit_callbacks)
    assert started == []
    assert Round.objects.get(pk=loop_round.pk).progress_done == 1
    _judge(team.alice, django_capture_on_commit_callbacks)
    assert started == [loop_round.pk]


def test_min_pairs_fires_once_enough_train_pairs_are_judged(
    team: Any, started: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    loop_round = _collecting(team, pairs=6, trigger="min_pairs", min_pairs=2)
    _judge(team.alice, django_capture_on_commit_callbacks)
    assert started == []
    _judge(team.alice, django_capture_on_commit_callbacks)
    assert started == [loop_round.pk]
