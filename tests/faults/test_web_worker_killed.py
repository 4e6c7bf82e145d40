"""A gunicorn worker SIGKILLed while annotators judge, and their clients retry.

Annotators judge through the API of a two-worker gunicorn; twice, one worker is killed in
the middle of it (gunicorn starts a new one). Clients whose connection broke ask again, and
resend a judgment with the same ``client_id`` until it is acknowledged. Afterwards every pair
is judged to its overlap, nobody twice, every acknowledged judgment stored once, and no lease
left dangling.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from annotate.datasets.imports import import_records
from annotate.models import Comparison, Membership, Project
from tests.factories import ProjectFactory, UserFactory
from tests.processes import database_url

from .conftest import Process
from .integrity import assert_integrity
from .web import Team, start_web, worker_pids

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PAIRS = 60
ANNOTATORS = 6


def team_project(pairs: int, annotators: int, overlap: int = 2) -> tuple[Project, list[str]]:
    """A project of ``pairs`` imported pairs and ``annotators`` annotators; their tokens."""
    project = ProjectFactory(name="Faults", overlap=overlap, lease_seconds=600)
    tokens = []
    for i in range(annotators):
        user = UserFactory(username=f"judge{i}")
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
        tokens.append(Token.objects.create(user=user).key)
    rows = [
        {"prompt": f"Prompt {i}?", "completion_a": f"A {i}", "completion_b": f"B {i}"}
        for i in range(pairs)
    ]
    import_records(project, "pairs", rows)
    return project, tokens


def test_judging_survives_a_web_worker_killed_mid_request(
    processes: Callable[..., Process], settings: Any
) -> None:
    project, tokens = team_project(PAIRS, ANNOTATORS)
    server, port = start_web(processes, {"DATABASE_URL": database_url()})
    team = Team(port, tokens, project.pk, seconds=150)
    killed = []
    for share in (4, 2):
        team.wait_until_judged(PAIRS * 2 // share)
        victim = worker_pids(server)[0]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
    outcomes = team.join()

    assert server.alive, server.output()[-3000:]
    assert outcomes.connection_errors > 0, "no request was cut off: the kill hit nothing"
    assert not outcomes.failures, outcomes.failures
    # every pair judged to its overlap (hidden repeats come on top of the pairs)
    assert len(outcomes.acknowledged) >= PAIRS * 2
    assert not Comparison.objects.filter(
        project=project, kind="train", judgment_count__lt=2
    ).exists()
    with connection.cursor() as cursor:
        assert_integrity(cursor, project.pk, acknowledged=outcomes.acknowledged)
