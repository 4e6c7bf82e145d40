"""The queue reads its open pairs off an index, in its own order (``annotate.queue``), so that a
request's cost does not grow with the project; the order it serves stays the queue's."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from annotate import queue
from annotate.models import Comparison, Project
from tests.factories import ComparisonFactory

STRATEGIES = list(Project.PairSelection.values)


def _plan(sql: str, params: list[Any]) -> str:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # On a test-sized table a sort is cheaper; forbid it to see whether the index can
            # give the order at all.
            cursor.execute("SET LOCAL enable_sort = off")
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(" ".join(map(str, row)) for row in cursor.fetchall())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("round_number", [None, 2])
def test_each_strategy_walks_its_index_in_the_queue_order_without_sorting(
    team: Any, strategy: str, round_number: int | None
) -> None:
    project = team.project
    project.pair_selection = strategy
    project.save()
    for i in range(6):
        ComparisonFactory(project=project, round=i % 3 or None, policy_margin=0.1 * i)
    # the compiled query that every request runs, with a request's values
    prepared = queue._RANGES[(strategy, round_number is not None)]
    sql, params = prepared.sql_with_params(
        project=project.pk,
        user=team.alice.pk,
        judged=0,
        overlap=project.overlap,
        round=round_number or 0,
        now=timezone.now(),
    )
    plan = _plan(sql, params)
    assert f"queue_open_{strategy}" in plan
    assert "TEMP B-TREE" not in plan.upper()
    assert "Sort" not in plan


def test_it_serves_the_newest_round_first_then_the_pairs_closest_to_completion(
    team: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = team.project
    project.overlap = 3
    project.save()
    old_done_twice = ComparisonFactory(project=project, round=1, random_key=0.9)
    old_fresh = ComparisonFactory(project=project, round=1, random_key=0.1)
    new_fresh = ComparisonFactory(project=project, round=2, random_key=0.1)
    new_done_once = ComparisonFactory(project=project, round=2, random_key=0.8)
    imported_done_twice = ComparisonFactory(project=project, round=None, random_key=0.5)
    imported_fresh = ComparisonFactory(project=project, round=None, random_key=0.0)
    for pair, judged in ((old_done_twice, 2), (new_done_once, 1), (imported_done_twice, 2)):
        Comparison.objects.filter(pk=pair.pk).update(judgment_count=judged)
    finished = ComparisonFactory(project=project, round=2, random_key=0.0)
    Comparison.objects.filter(pk=finished.pk).update(judgment_count=3)

    expected = [
        new_done_once.pk,
        new_fresh.pk,
        old_done_twice.pk,
        old_fresh.pk,
        imported_done_twice.pk,
        imported_fresh.pk,
    ]
    # The queue's look-up reads the head of that order.
    order = queue._candidates(project, team.alice.pk, timezone.now(), None)
    assert order == expected[: queue._CANDIDATES_PER_REQUEST]
    assert queue._candidates(project, team.alice.pk, timezone.now(), 1) == [
        old_done_twice.pk,
        old_fresh.pk,
    ]
    # Read further, the ranges merge in the same order.
    monkeypatch.setattr(queue, "_CANDIDATES_PER_REQUEST", 10)
    assert queue._candidates(project, team.alice.pk, timezone.now(), None, lock=False) == expected


def test_the_strategy_key_comes_before_the_judgment_count(team: Any) -> None:
    project = team.project
    project.overlap = 2
    project.pair_selection = Project.PairSelection.UNCERTAINTY
    project.save()
    near_zero = ComparisonFactory(project=project, round=1, policy_margin=-0.05)
    far_judged_once = ComparisonFactory(project=project, round=1, policy_margin=2.0)
    unscored = ComparisonFactory(project=project, round=1, policy_margin=None)
    Comparison.objects.filter(pk=far_judged_once.pk).update(judgment_count=1)

    order = queue._candidates(project, None, timezone.now(), None)

    assert order == [near_zero.pk, far_judged_once.pk, unscored.pk]


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the NULLS LAST index is PostgreSQL's form"
)
@pytest.mark.django_db
def test_postgresql_builds_the_queue_indexes_with_nulls_last() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'queue_open_%%'"
        )
        definitions = dict(cursor.fetchall())
    assert sorted(definitions) == sorted(f"queue_open_{s}" for s in STRATEGIES)
    for definition in definitions.values():
        assert "round DESC NULLS LAST" in definition


def test_a_gold_pair_is_drawn_off_its_index_without_sorting_the_gold_set(
    team: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = team.project
    golds = [ComparisonFactory(project=project, kind="gold", gold_choice="a") for _ in range(5)]
    keys = sorted(g.random_key for g in golds)
    statements: list[tuple[str, list[Any]]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, list(params)))
        return execute(sql, params, many, context)

    # a draw just past the second key gives the pair with the third key
    monkeypatch.setattr(queue.random, "random", lambda: (keys[1] + keys[2]) / 2)
    with connection.execute_wrapper(capture):
        drawn = queue._gold_candidate(project, team.alice.pk)
    assert Comparison.objects.get(pk=drawn).random_key == keys[2]
    plan = _plan(*statements[0])
    assert "pairs_by_kind_key" in plan
    assert "TEMP B-TREE" not in plan.upper()
    assert "Sort" not in plan
    # past the last key it wraps round to the first
    monkeypatch.setattr(queue.random, "random", lambda: keys[-1] + 1e-9)
    drawn = queue._gold_candidate(project, team.alice.pk)
    assert Comparison.objects.get(pk=drawn).random_key == keys[0]
