"""The broker stopped while annotators judge the last pairs of a round.

The web app sends Celery messages through a private Redis that the test kills. Judging must
go on (a message that cannot be sent never fails the annotator's request); the round's trigger
still closes collection, and once the broker is back the beat's sweep sends the training task
that was lost.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db import connection
from rest_framework.authtoken.models import Token

from annotate.models import Membership
from tests.factories import UserFactory
from tests.loop.conftest import make_loop_project
from tests.processes import database_url
from training import services
from training.models import Round, TrainingRun

from .conftest import ROOT, Process
from .instances import Redis
from .integrity import assert_integrity
from .web import Team, start_web

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SWEEP = """
from datetime import timedelta
from django.utils import timezone
from training import services
print(services.recover_stuck_rounds(now=timezone.now() + timedelta(hours=1)))
"""


def _queued_tasks(server: Redis, queue: str) -> list[tuple[str, list[Any]]]:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    messages = [json.loads(m) for m in client.lrange(queue, 0, -1)]
    return [(m["headers"]["task"], json.loads(_body(m))[0]) for m in messages]


def _body(message: dict[str, Any]) -> str:
    return base64.b64decode(message["body"]).decode()


def test_judging_goes_on_without_the_broker_and_training_is_sent_once_it_is_back(
    processes: Callable[..., Process],
    private_redis: Redis,
    tiny_model_dir: Path,
    var_dir: Path,
) -> None:
    project = make_loop_project(tiny_model_dir)
    project.overlap = 2
    project.save(update_fields=["overlap"])
    with services.in_process():
        loop_round = services.start_round(project)
        services.generate_round(loop_round.pk)
    tokens = []
    for i in range(3):
        user = UserFactory(username=f"judge{i}")
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
        tokens.append(Token.objects.create(user=user).key)
    env = {"DATABASE_URL": database_url(), "CELERY_BROKER_URL": private_redis.url}
    _, port = start_web(processes, env)

    private_redis.stop()
    outcomes = Team(port, tokens, project.pk, seconds=120).join()

    assert not outcomes.failures, outcomes.failures
    assert outcomes.connection_errors == 0
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.TRAINING, loop_round.error  # the trigger fired
    run = TrainingRun.objects.get(round=loop_round)
    assert run.state == TrainingRun.State.QUEUED
    with connection.cursor() as cursor:
        assert_integrity(cursor, project.pk, acknowledged=outcomes.acknowledged)

    # the broker comes back empty: the message that could not be sent is sent by the sweep
    private_redis.start()
    assert _queued_tasks(private_redis, "train") == []
    swept = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SWEEP],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert swept.stdout.strip().splitlines()[-1:] == ["1"], swept.stderr[-3000:]
    assert _queued_tasks(private_redis, "train") == [("training.tasks.train_round", [run.pk])]
    with connection.cursor() as cursor:
        assert_integrity(cursor, project.pk, acknowledged=outcomes.acknowledged)
