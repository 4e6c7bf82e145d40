"""Imports and exports run by a worker, tracked in DatasetJob rows: starting one and
following it. What the worker does with a job is in ``runner``."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path, PurePath
from typing import IO, Any

from django.conf import settings
from django.db import transaction

from annotate.errors import NotFound, ServiceError
from annotate.models import DatasetJob, Project

from . import tasks
from .exporters import check_format, check_options, export_filename
from .formats import IMPORT_FORMATS, ImportOptions
from .imports import check_size
from .labels import PairOptions
from .readers import file_type
from .runner import live_progress


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
    transaction.on_commit(lambda: tasks.run_dataset_job.delay(job.pk))


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
    return job
