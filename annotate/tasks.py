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
