"""The loop's beat entries, run eagerly the way celery beat would send them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from annotate.celery import app
from annotate.models import Project
from tests.factories import ProjectFactory
from training import services
from training.models import Round, TrainingRun


def _beat(task_name: str) -> Any:
    """Run the beat entry for ``task_name`` in this process and return its result."""
    entries = [e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == task_name]
    assert len(entries) == 1, f"{task_name} is not in the beat schedule exactly once"
    app.loader.import_default_modules()  # the task modules, as a worker finds them
    result = app.tasks[task_name].apply()
    assert result.successful()
    return result.get()


def _collecting_round(project: Project) -> Round:
    with services.in_process():
        loop_round = services.start_round(project)
        services.generate_round(loop_round.pk)
    return Round.objects.get(pk=loop_round.pk)


def test_it_starts_training_from_the_beat_once_a_round_is_judged(
    loop_project: Project, django_capture_on_commit_callbacks: Any
) -> None:
    loop_round = _collecting_round(loop_project)
    assert loop_round.state == Round.State.COLLECTING
    assert _beat("training.tasks.check_triggers") == 0
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.COLLECTING

    # judged without the judgment signal, so only the beat can notice
    with services.in_process():
        services.simulate_annotators(
            loop_project, "shorter", annotators=1, noise=0.0, round_number=loop_round.number
        )
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.COLLECTING
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert _beat("training.tasks.check_triggers") == 1
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.TRAINING
    assert loop_round.progress_done == loop_round.progress_total > 0
    run = TrainingRun.objects.get(round=loop_round)
    assert run.state == TrainingRun.State.QUEUED and run.num_pairs > 0
    assert len(callbacks) == 1  # the training task, dispatched on commit

    # a second beat finds nothing left to start
    assert _beat("training.tasks.check_triggers") == 0
    assert TrainingRun.objects.filter(round=loop_round).count() == 1


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _running(worker: str, heartbeat_age_s: float) -> TrainingRun:
    # one open round per project, so each run gets a project of its own
    project = ProjectFactory()
    loop_round = Round.objects.create(
        project=project,
        number=1,
        policy=services.base_version(project),
        state=Round.State.TRAINING,
    )
    now = timezone.now()
    return TrainingRun.objects.create(
        round=loop_round,
        version_number=1,
        state=TrainingRun.State.RUNNING,
        worker=worker,
        started_at=now - timedelta(seconds=heartbeat_age_s),
        heartbeat_at=now - timedelta(seconds=heartbeat_age_s),
    )


def test_it_fails_lost_training_runs_from_the_beat(db: Any, settings: Any) -> None:
    settings.PREFLOOP_TRAIN_STALE_SECONDS = 600
    host = socket.gethostname()
    alive = _running(f"{host}:{os.getpid()}", heartbeat_age_s=5)
    dead = _running(f"{host}:{_dead_pid()}", heartbeat_age_s=5)
    silent = _running("elsewhere:1234", heartbeat_age_s=3600)
    reporting = _running("elsewhere:1234", heartbeat_age_s=5)

    assert _beat("training.tasks.fail_lost_runs") == 2

    for run in (dead, silent):
        run.refresh_from_db()
        assert run.state == TrainingRun.State.FAILED and run.finished_at is not None
        assert "worker" in run.error and "lost" in run.error
        run.round.refresh_from_db()
        assert run.round.state == Round.State.FAILED and "lost" in run.round.error
    for run in (alive, reporting):
        run.refresh_from_db()
        assert run.state == TrainingRun.State.RUNNING
        assert Round.objects.get(pk=run.round_id).state == Round.State.TRAINING

    assert _beat("training.tasks.fail_lost_runs") == 0


def test_it_sends_again_from_the_beat_a_training_message_that_was_lost(
    loop_project: Project, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    loop_round = _collecting_round(loop_project)
    with services.in_process():
        services.simulate_annotators(
            loop_project, "shorter", annotators=1, noise=0.0, round_number=loop_round.number
        )
        run = services.begin_training(loop_round)  # its message never reaches a worker
    assert _beat("training.tasks.recover_stuck_rounds") == 0  # queued a moment ago

    settings.PREFLOOP_ROUND_STALE_SECONDS = 60
    Round.objects.filter(pk=loop_round.pk).update(updated_at=timezone.now() - timedelta(seconds=61))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert _beat("training.tasks.recover_stuck_rounds") == 1
    assert len(callbacks) == 1  # the training task, sent again
    assert TrainingRun.objects.get(round=loop_round) == run
    assert _beat("training.tasks.recover_stuck_rounds") == 0  # not again at once


@pytest.mark.parametrize(
    "task_name",
    [
        "training.tasks.check_triggers",
        "training.tasks.fail_lost_runs",
        "training.tasks.recover_stuck_rounds",
    ],
)
def test_it_does_nothing_from_the_beat_on_an_idle_project(db: Any, task_name: str) -> None:
    assert _beat(task_name) == 0
