"""The dataset job task. Its name predates this module and is kept: queued messages
and routes refer to tasks by name."""

from __future__ import annotations

from celery import shared_task

from annotate.models import DatasetJob

from .runner import fail_abandoned_jobs, run_job


@shared_task(name="annotate.tasks.run_dataset_job")
def run_dataset_job(job_id: int) -> str:
    """Run a background import or export (a DatasetJob) and return its final status."""
    try:
        return str(run_job(job_id).status)
    except DatasetJob.DoesNotExist:
        # removed when queueing it seemed to fail, though the broker had the message after all
        return "gone"


@shared_task(name="annotate.tasks.fail_abandoned_dataset_jobs")
def fail_abandoned_dataset_jobs() -> list[int]:
    """The beat's sweep for jobs whose worker died (`runner.fail_abandoned_jobs`)."""
    return fail_abandoned_jobs()
