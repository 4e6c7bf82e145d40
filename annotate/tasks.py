from __future__ import annotations

from celery import shared_task

from . import services


@shared_task
def release_expired_leases() -> int:
    return services.release_expired_leases()


@shared_task
def refresh_quality(project_id: int) -> int:
    """Recompute a project's quality figures into the shared cache; returns the judgments."""
    from .models import Project
    from .quality.report import refresh

    project = Project.objects.filter(pk=project_id).first()
    return 0 if project is None else int(refresh(project)["judgments"])


@shared_task
def ping(value: str) -> str:
    """Round-trips a value through the broker; used to check a worker is alive."""
    return f"pong:{value}"
