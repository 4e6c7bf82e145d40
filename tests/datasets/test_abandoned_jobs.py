"""A background job whose worker died is failed by the beat instead of running for ever."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from annotate.celery import app
from annotate.datasets import runner
from annotate.models import DatasetJob

TASK = "annotate.tasks.fail_abandoned_dataset_jobs"


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def _running(team, var_dir, age_s: float, kind=DatasetJob.Kind.IMPORT) -> DatasetJob:
    upload = runner.jobs_dir() / f"upload-{kind}-{age_s}.jsonl"
    upload.write_text('{"prompt": "p"}\n')
    job = DatasetJob.objects.create(
        project=team.project,
        kind=kind,
        format="jsonl",
        status=DatasetJob.Status.RUNNING,
        source_path=str(upload.relative_to(var_dir)) if kind == DatasetJob.Kind.IMPORT else "",
    )
    DatasetJob.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - timedelta(seconds=age_s)
    )
    return DatasetJob.objects.get(pk=job.pk)


def _beat() -> list[int]:
    entries = [e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == TASK]
    assert len(entries) == 1
    app.loader.import_default_modules()
    return app.tasks[TASK].apply().get()


def test_the_beat_fails_a_job_whose_worker_stopped_and_removes_its_upload(team, var_dir):
    dead = _running(team, var_dir, age_s=3 * 3600)
    upload = var_dir / dead.source_path
    fresh = _running(team, var_dir, age_s=10)

    assert _beat() == [dead.pk]

    dead.refresh_from_db()
    assert dead.status == DatasetJob.Status.FAILED and dead.finished_at is not None
    assert "worker running this job stopped" in dead.error
    assert not upload.exists()
    fresh.refresh_from_db()
    assert fresh.status == DatasetJob.Status.RUNNING
    assert (var_dir / fresh.source_path).exists()
    assert _beat() == []  # once


def test_recent_progress_keeps_an_old_job_alive_until_it_goes_quiet(team, var_dir):
    job = _running(team, var_dir, age_s=3 * 3600, kind=DatasetJob.Kind.EXPORT)
    report = runner._Reporter(job)
    report(10)  # the worker is still writing rows
    assert runner.fail_abandoned_jobs(stale_after_s=600) == []
    quiet = time.time() - 601
    os.utime(runner._progress_file(job), (quiet, quiet))
    assert runner.fail_abandoned_jobs(stale_after_s=600) == [job.pk]
    assert not runner._progress_file(job).exists()
