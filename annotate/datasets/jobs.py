"""Imports and exports run by a worker, tracked in DatasetJob rows: starting one and
following it. What the worker does with a job is in ``runner``."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path, PurePath
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError

from annotate.errors import NotFound, ServiceError, Unavailable
from annotate.models import DatasetJob, Project

from . import tasks
from .exporters import check_format, check_options, export_filename
from .formats import IMPORT_FORMATS, ImportOptions
from .imports import check_size
from .labels import PairOptions
from .readers import file_type
from .runner import live_progress

log = logging.getLogger(__name__)


def import_in_background(size: int | None, *, asked: bool = False) -> bool:
    """Whether an import runs as a job rather than in the request.

    It does when asked, or when the file is over PREFLOOP_IMPORT_INLINE_BYTES, so that no
    request waits on a big file.
    """
    return asked or (size or 0) > settings.PREFLOOP_IMPORT_INLINE_BYTES


def job_progress(job: DatasetJob) -> tuple[int, int | None]:
    """(done, total) of a job: live while it runs, final once it is finished."""
    if job.status == DatasetJob.Status.RUNNING:
        return live_progress(job), job.total
    return job.progress, job.total


def job_percent(job: DatasetJob) -> int:
    if job.status == DatasetJob.Status.DONE:
        return 100
    done, total = job_progress(job)
    return min(99, int(100 * done / total)) if total else 0


def get_job(project: Project, job_id: int | str) -> DatasetJob:
    try:
        return DatasetJob.objects.get(project=project, pk=int(job_id))
    except (DatasetJob.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such job.") from None


def result_file(job: DatasetJob) -> Path:
    if job.status != DatasetJob.Status.DONE or job.kind != DatasetJob.Kind.EXPORT:
        raise NotFound("This job has no file to download.")
    path = Path(settings.VAR_DIR) / job.result_path
    if not path.is_file():
        raise NotFound("The file of this job is gone; run the export again.")
    return path


def _dispatch(job: DatasetJob) -> None:
    """Queue the job once its row is committed (a worker must find it).

    A job whose message the broker did not take would stay pending forever, so when queueing
    fails the row and its upload are removed again and the caller is told to retry (503). The
    commit runs this before the outermost ``atomic`` block returns, so the error reaches the
    request that started the job.
    """
    transaction.on_commit(lambda: _send(job))


def _send(job: DatasetJob) -> None:
    try:
        tasks.run_dataset_job.delay(job.pk)
    except (BrokerError, OSError):
        # kombu wraps a broker it cannot connect to in OperationalError; the file-system broker
        # raises OSError itself
        log.exception("Could not queue dataset job %s; it is removed", job.pk)
        _discard(job)
        raise Unavailable(
            f"The {job.kind} could not be queued: the task broker is not reachable. "
            "Nothing was kept; try again in a moment."
        ) from None


def _discard(job: DatasetJob) -> None:
    DatasetJob.objects.filter(pk=job.pk).delete()
    if job.source_path:
        (Path(settings.VAR_DIR) / job.source_path).unlink(missing_ok=True)


@transaction.atomic
def start_export_job(
    project: Project, user: Any, fmt: str, options: PairOptions, bundle: str = "file"
) -> DatasetJob:
    check_format(fmt, bundle)
    check_options(project, options)
    job = DatasetJob.objects.create(
        project=project,
        kind=DatasetJob.Kind.EXPORT,
        format=fmt,
        options={**options.as_dict(), "bundle": bundle},
        filename=export_filename(project, fmt, bundle),
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    _dispatch(job)
    return job


def start_import_job(
    project: Project,
    user: Any,
    fmt: str,
    upload: IO[bytes],
    filename: str,
    options: ImportOptions,
    *,
    size: int | None = None,
) -> DatasetJob:
    """Keep the upload under VAR_DIR and import it in the background."""
    if fmt not in IMPORT_FORMATS:
        raise ServiceError(f'"format" must be one of {", ".join(IMPORT_FORMATS)}')
    check_size(size)
    file_type(filename)
    suffix = PurePath(filename).suffix.lower()
    incoming = Path(settings.VAR_DIR) / "imports"
    incoming.mkdir(parents=True, exist_ok=True)
    stored = incoming / f"{uuid.uuid4().hex}{suffix}"
    try:
        with stored.open("wb") as fh:
            shutil.copyfileobj(upload, fh, length=1 << 20)
        with transaction.atomic():
            job = DatasetJob.objects.create(
                project=project,
                kind=DatasetJob.Kind.IMPORT,
                format=fmt,
                options=options.as_dict(),
                source_path=str(stored.relative_to(settings.VAR_DIR)),
                filename=PurePath(filename).name[:255],
                total=stored.stat().st_size,
                created_by=user if getattr(user, "is_authenticated", False) else None,
            )
            _dispatch(job)
    except BaseException:
        # no job will read the upload: a full disk, a failed insert or a broker that is down
        stored.unlink(missing_ok=True)
        raise
    return job
