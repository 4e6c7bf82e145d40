"""The annotation loop's two requests cost a fixed, small number of statements, whatever the
project's size, and the queries compiled once give the rows the ORM gives."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate import queue
from annotate.models import Comparison, Judgment, Project
from annotate.prepared import Prepared
from annotate.quality import repeats
from tests.factories import ComparisonFactory

NEXT_STATEMENTS = 3 if connection.vendor == "postgresql" else 4


def _token_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def _statements(queries: CaptureQueriesContext) -> list[str]:
    # transaction control is not a statement of the loop's own
    return [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].split()[0].upper() not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")
    ]


def _one_judgment(client: APIClient, project: Project) -> tuple[list[str], list[str]]:
    with CaptureQueriesContext(connection) as next_queries:
        task = client.get(f"/api/projects/{project.pk}/next/")
    assert task.status_code == 200, task.content
    body = {"choice": "left", "client_id": str(uuid.uuid4())}
    with CaptureQueriesContext(connection) as submit_queries:
        r = client.post(
            f"/api/comparisons/{task.json()['comparison']}/judgments/", body, format="json"
        )
    assert r.status_code == 201, r.content
    return _statements(next_queries), _statements(submit_queries)


def _project_of(team: Any, pairs: int) -> Project:
    project = team.project
    # no gold or hidden repeat drawn at random: each adds its own look-ups
    project.gold_rate = project.repeat_rate = 0.0
    project.save()
    (pair,) = team.pairs(1)
    same = {"prompt": pair.prompt, "completion_a": pair.completion_a}
    Comparison.objects.bulk_create(
        Comparison(project=project, completion_b=pair.completion_b, **same) for _ in range(pairs)
    )
    return project


@pytest.mark.parametrize("pairs", [3, 300])
def test_next_and_submit_take_the_same_few_statements_at_any_project_size(
    team: Any, pairs: int
) -> None:
    project = _project_of(team, pairs)
    client = _token_client(team.alice)
    _one_judgment(client, project)  # the first request of a process compiles the queue's query

    next_statements, submit_statements = _one_judgment(client, project)

    # next: the user by their token with the project, the role and the user's queue state, the
    # candidates (row-locked on PostgreSQL), the lease, what the task shows (read by the lease's
    # own statement on PostgreSQL)
    assert len(next_statements) == NEXT_STATEMENTS, next_statements
    # submit: the pair with everything checked and the user by their token, the judgment with
    # its lease, its count and its prompt's selection figures (four statements on SQLite)
    assert len(submit_statements) == (2 if connection.vendor == "postgresql" else 5), (
        submit_statements
    )
    assert Judgment.objects.filter(annotator=team.alice).count() == 2


def test_a_waiting_hidden_repeat_costs_next_no_statement_until_it_is_due(team: Any) -> None:
    project = _project_of(team, 30)
    client = _token_client(team.alice)
    _one_judgment(client, project)
    original = Judgment.objects.get(annotator=team.alice).comparison
    repeats.schedule(Judgment.objects.get(annotator=team.alice))
    # the member's judgments are counted in the look-up that reads their queue state
    next_statements, _ = _one_judgment(client, project)
    assert len(next_statements) == NEXT_STATEMENTS, next_statements
    repeat = Comparison.objects.get(repeat_of=original)
    Comparison.objects.filter(pk=repeat.pk).update(repeat_due=2)
    with CaptureQueriesContext(connection):
        task = client.get(f"/api/projects/{project.pk}/next/")
    assert task.json()["comparison"] == repeat.pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's prepared statements")
def test_the_loop_statements_are_prepared_once_per_connection(team: Any) -> None:
    if not connection.settings_dict["OPTIONS"].get("prepare_threshold"):
        pytest.skip("DB_PREPARE_THRESHOLD=0 turns prepared statements off")
    project = _project_of(team, 30)
    client = _token_client(team.alice)
    for _ in range(3):
        _one_judgment(client, project)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    # the token, the queue's candidates, the lease
    for marker in ("authtoken_token", '"queue_key"', "INSERT INTO annotate_assignment"):
        assert any(marker in sql for sql in prepared), (marker, prepared)


def _loop_requests(project: Project, pair: Comparison) -> list[tuple[str, str, Any]]:
    """Every kind of loop request, good or bad: (method, path, JSON body)."""
    judgments = f"/api/comparisons/{pair.pk}/judgments/"
    good = {"choice": "left", "client_id": str(uuid.uuid4())}
    return [
        ("get", "/api/projects/", None),
        ("get", f"/api/projects/{project.pk}/next/", None),
        ("get", "/api/projects/999999/next/", None),
        ("get", "/api/projects/0/next/", None),
        ("post", judgments, good),
        ("post", judgments, {"choice": "sideways", "client_id": "x"}),
        ("post", "/api/comparisons/999999/judgments/", good),
        ("delete", judgments, None),
        ("options", judgments, None),
        ("put", judgments, good),
        ("post", f"/api/projects/{project.pk}/next/", None),
    ]


def test_a_wrong_or_inactive_token_is_a_401_before_anything_else(team: Any) -> None:
    """The loop's views check the token inside their first statement: a wrong token, or an
    inactive user's, still answers 401 (with the header that names the scheme) before any
    other answer, and writes nothing."""
    project = _project_of(team, 3)
    pair = Comparison.objects.filter(project=project).first()
    assert pair is not None
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    inactive = _token_client(team.bob)
    assert inactive.get(f"/api/projects/{project.pk}/next/").status_code == 200
    team.bob.is_active = False
    team.bob.save()
    for client, detail in ((wrong, "Invalid token."), (inactive, "User inactive or deleted.")):
        for method, path, body in _loop_requests(project, pair):
            r = getattr(client, method)(path, body, format="json")
            assert r.status_code == 401, (method, path, body, r.content)
            assert r.json() == {"detail": detail}
            assert r["WWW-Authenticate"] == "Token"
    assert not Judgment.objects.exists()
    assert not project.assignments.exclude(annotator=team.bob).exists()


def test_the_token_user_is_the_whole_user(team: Any) -> None:
    client = _token_client(team.alice)
    r = client.get(f"/api/projects/{team.project.pk}/")
    assert r.status_code == 200
    assert r.json()["role"] == "annotator"


def test_a_prepared_query_gives_the_rows_of_its_queryset(team: Any) -> None:
    project = team.project
    for i in range(5):
        ComparisonFactory(project=project, round=i % 2 or None)
    Comparison.objects.filter(pk=Comparison.objects.order_by("pk").first().pk).update(
        judgment_count=1
    )
    now = timezone.now()
    for by_round in (False, True):
        for judged in (0, 1):
            expected = list(
                queue._queue_range(
                    "random",
                    project.pk,
                    project.overlap,
                    judged,
                    now,
                    1 if by_round else None,
                    team.alice.pk,
                )
            )
            sql, params = queue._RANGES[("random", by_round)].sql_with_params(
                project=project.pk,
                user=team.alice.pk,
                judged=judged,
                overlap=project.overlap,
                round=1,
                now=now,
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            assert [tuple(r) for r in rows] == [tuple(r) for r in expected]


@pytest.mark.django_db
def test_a_placeholder_that_does_not_reach_the_sql_is_refused() -> None:
    # an argument the queryset ignores would silently bind nothing
    prepared = Prepared(
        lambda project, unused: Project.objects.filter(pk=project), ints=["project", "unused"]
    )
    with pytest.raises(ValueError, match="unused"):
        prepared.compile()


def test_a_queue_that_moved_under_a_request_is_looked_at_again(team: Any, monkeypatch: Any) -> None:
    """The candidates are read before their slots are leased; when others took every one of them
    in between, the request looks again instead of answering that nothing is left."""
    project = team.project
    team.pairs(2)
    real_lease, real_candidates = queue._lease, queue._candidates
    passes: list[list[int]] = []

    def candidates(*args: Any, **kwargs: Any) -> list[int]:
        passes.append(real_candidates(*args, **kwargs))
        return passes[-1]

    def lease(project: Project, comparison_id: int, user_id: int, now: Any, **kwargs: Any) -> Any:
        if len(passes) == 1:
            # in the first pass, someone else fills each candidate's last slot just before
            return None
        return real_lease(project, comparison_id, user_id, now, **kwargs)

    monkeypatch.setattr(queue, "_candidates", candidates)
    monkeypatch.setattr(queue, "_lease", lease)
    assignment = queue.next_assignment(project, team.alice)
    assert assignment is not None
    assert len(passes) == 2 and len(passes[0]) == 2
