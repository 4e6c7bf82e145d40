from __future__ import annotations

from celery import shared_task

from . import services


@shared_task
def release_expired_leases() -> int:
    return services.release_expired_leases()


@shared_task
def ping(value: str) -> str:
    """Round-trips a value through the broker; used to check a worker is alive."""
    return f"pong:{value}"


@shared_task
def run_dataset_job(job_id: int) -> str:
    """Run a background import or export (a DatasetJob) and return its final status."""
    from .datasets.jobs import run_job

    return str(run_job(job_id).status)
