"""Running a DatasetJob to the end, in the worker.

A job's progress goes to a small file beside its result rather than to its row: an
import writes inside one long transaction, and on SQLite no other write (not even to
the job row) can happen until it commits. The row is updated when the job starts and
when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path, PurePath

from django.conf import settings
from django.utils import timezone

from annotate.errors import ServiceError
from annotate.models import DatasetJob

from .exporters import estimated_total, write_export, zip_directory
from .formats import ImportOptions
from .imports import import_file
from .labels import PairOptions

log = logging.getLogger(__name__)

_PROGRESS_EVERY_S = 1.0
# A worker killed while exporting leaves its .part behind (a redelivered job writes a new one);
# one that nothing has written to for this long is swept by the next export.
_STALE_PART_S = 24 * 3600


def jobs_dir() -> Path:
    path = Path(settings.VAR_DIR) / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def exports_dir() -> Path:
    path = Path(settings.VAR_DIR) / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _progress_file(job: DatasetJob) -> Path:
    return jobs_dir() / f"{job.pk}.progress.json"


class _Reporter:
    """Writes ``done`` of ``total`` to the job's progress file, at most once a second."""

    def __init__(self, job: DatasetJob) -> None:
        self.path = _progress_file(job)
        self.total = job.total
        self.last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < _PROGRESS_EVERY_S:
            return
        self.last = now
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": done, "total": self.total}))
        os.replace(tmp, self.path)


def live_progress(job: DatasetJob) -> int:
    """The rows or bytes a running job has done so far, as its last report said."""
    try:
        return int(json.loads(_progress_file(job).read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def run_job(job_id: int) -> DatasetJob:
    """Run one job to the end; failures a user caused are stored as the job's error."""
    job = DatasetJob.objects.select_related("project").get(pk=job_id)
    if job.is_finished:
        return job
    job.status = DatasetJob.Status.RUNNING
    job.save(update_fields=["status"])
    try:
        if job.kind == DatasetJob.Kind.IMPORT:
            _run_import(job, _Reporter(job))
        else:
            # inside the try: options that no longer hold (a version gone since the job was
            # started) fail the job instead of leaving it running
            job.total = estimated_total(job.project, job.format, PairOptions.from_dict(job.options))
            job.save(update_fields=["total"])
            _run_export(job, _Reporter(job))
    except ServiceError as exc:
        job.status, job.error = DatasetJob.Status.FAILED, exc.message
    except Exception as exc:
        log.exception("Dataset job %s failed", job.pk)
        job.status, job.error = DatasetJob.Status.FAILED, _failure_message(job, exc)
    else:
        job.status = DatasetJob.Status.DONE
    finally:
        _progress_file(job).unlink(missing_ok=True)
        if job.kind == DatasetJob.Kind.IMPORT and job.source_path:
            (Path(settings.VAR_DIR) / job.source_path).unlink(missing_ok=True)
    job.finished_at = timezone.now()
    job.save(
        update_fields=[
            "status",
            "error",
            "progress",
            "total",
            "report",
            "result_path",
            "finished_at",
        ]
    )
    return job


def _run_import(job: DatasetJob, reporter: _Reporter) -> None:
    source = Path(settings.VAR_DIR) / job.source_path
    with source.open("rb") as fh:
        report = import_file(
            job.project,
            job.format,
            fh,
            job.filename or source.name,
            options=ImportOptions.from_dict(job.options),
            on_progress=reporter,
        )
    job.report = report.as_report()
    job.progress = job.total or 0


def _failure_message(job: DatasetJob, exc: Exception) -> str:
    if job.kind == DatasetJob.Kind.IMPORT:
        return "The job failed unexpectedly; see the worker's log."
    # the strerror of a disk that is full or read-only is worth showing; the path is not
    reason = f" ({exc.strerror})" if isinstance(exc, OSError) and exc.strerror else ""
    return (
        f"The export failed before it was complete{reason}; no file was kept. "
        "The worker's log has the details."
    )


def _run_export(job: DatasetJob, reporter: _Reporter) -> None:
    """Write the export beside its final name and rename it there only once it is whole, so
    that a failed or interrupted export never leaves a file that looks like a result."""
    options = PairOptions.from_dict(job.options)
    bundle = str(job.options.get("bundle", "file"))
    target = exports_dir() / f"{job.pk}-{job.filename}"
    sweep_stale_parts(exports_dir())
    partial = exports_dir() / f".{job.pk}-{uuid.uuid4().hex}.part"
    try:
        if bundle == "hf":
            with tempfile.TemporaryDirectory(
                dir=exports_dir(), prefix=f".{job.pk}-", suffix=".part"
            ) as tmp:
                directory = Path(tmp) / PurePath(job.filename).stem
                stats = write_export(
                    job.project, job.format, options, directory, bundle="hf", on_progress=reporter
                )
                zip_directory(directory, partial)
        else:
            stats = write_export(
                job.project, job.format, options, partial, bundle=bundle, on_progress=reporter
            )
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    job.result_path = str(target.relative_to(settings.VAR_DIR))
    job.report = stats.as_dict()
    job.progress = stats.rows
    job.total = stats.rows


def fail_abandoned_jobs(stale_after_s: float | None = None) -> list[int]:
    """Fail the running jobs that show no sign of life for ``stale_after_s`` (default the
    ``PREFLOOP_JOB_STALE_SECONDS`` setting); returns their ids.

    A worker process killed mid-job (out of memory, a deploy) never reaches `run_job`'s end,
    and the job would show "Running" for ever. Its last sign of life is its progress file,
    written at least every few seconds while rows go by, or the job's creation when it never
    reported. An import writes in one transaction, so a dead one kept no rows; its upload is
    removed like a finished job's. A job failed here that was only slow still ends as it
    should: `run_job` saves its real outcome over this one.
    """
    if stale_after_s is None:
        stale_after_s = settings.PREFLOOP_JOB_STALE_SECONDS
    now = time.time()
    failed = []
    for job in DatasetJob.objects.filter(status=DatasetJob.Status.RUNNING):
        try:
            last = max(job.created_at.timestamp(), _progress_file(job).stat().st_mtime)
        except OSError:
            last = job.created_at.timestamp()
        if now - last < stale_after_s:
            continue
        changed = DatasetJob.objects.filter(pk=job.pk, status=DatasetJob.Status.RUNNING).update(
            status=DatasetJob.Status.FAILED,
            error=(
                f"The worker running this job stopped: no progress for {stale_after_s / 60:.0f} "
                "minutes. Nothing was kept; start the job again."
            ),
            finished_at=timezone.now(),
        )
        if not changed:
            continue  # it finished meanwhile
        log.warning("Dataset job %s failed: its worker stopped", job.pk)
        _progress_file(job).unlink(missing_ok=True)
        if job.kind == DatasetJob.Kind.IMPORT and job.source_path:
            (Path(settings.VAR_DIR) / job.source_path).unlink(missing_ok=True)
        failed.append(job.pk)
    return failed


def sweep_stale_parts(directory: Path, older_than_s: float = _STALE_PART_S) -> None:
    """Remove the .part files and directories that no export has written to for a while."""
    cutoff = time.time() - older_than_s
    for path in directory.glob(".*.part"):
        try:
            entries = [path, *path.rglob("*")] if path.is_dir() else [path]
            if max(entry.stat().st_mtime for entry in entries) >= cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError:
            continue  # another export removed or renamed it meanwhile
