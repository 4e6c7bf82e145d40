"""A real `celery worker` process consumes tasks through the configured broker.

On the embedded defaults that is the file-system broker under var/broker; in
the service-backed run (.ci/run) it is Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from annotate.tasks import ping

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_it_round_trips_a_task_through_a_worker_process():
    queue = f"test-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "annotate", "worker", "--pool", "solo",
         "--queues", queue, "--hostname", f"{queue}@%h", "--loglevel", "INFO",
         "--without-mingle", "--without-gossip"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        result = ping.apply_async(args=["hello"], queue=queue)
        assert result.get(timeout=90) == "pong:hello"
        if settings.CELERY_BROKER_URL.startswith("filesystem://"):
            # The message really went through files, not an in-process shortcut.
            assert not settings.CELERY_TASK_ALWAYS_EAGER
            assert Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"]).is_dir()
    finally:
        worker.terminate()
        try:
            out, _ = worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, _ = worker.communicate()
    assert "annotate.tasks.ping" in out
    assert "succeeded" in out


def test_beat_schedules_the_lease_sweeper():
    assert settings.CELERY_BEAT_SCHEDULE["release-expired-leases"]["task"] == (
        "annotate.tasks.release_expired_leases"
    )


def test_lease_sweeper_task_runs_eagerly(team):
    from datetime import timedelta

    from django.utils import timezone

    from annotate import services
    from annotate.models import Assignment
    from annotate.tasks import release_expired_leases

    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    Assignment.objects.filter(pk=a.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert release_expired_leases.apply().get() == 1


def test_it_waits_no_longer_than_needed():
    started = time.monotonic()
    assert ping.apply(args=["x"]).get() == "pong:x"
    assert time.monotonic() - started < 30
