"""Celery tasks of the loop: thin wrappers that take ids and call one service function.

Routing (settings.CELERY_TASK_ROUTES): ``generate_*`` to the generate queue, ``train_*`` to the
train queue, the rest to default. Time limits come from settings so a deployment can size them.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from . import services
from .models import Round
from .services import active


def _limits(kind: str) -> dict[str, int]:
    hard = int(getattr(settings, f"PREFLOOP_{kind}_TIME_LIMIT", 3600))
    return {"time_limit": hard, "soft_time_limit": max(1, hard - 60)}


@shared_task(bind=True, **_limits("GENERATE"))
def generate_round(self: Task, round_id: int) -> str:
    def progress(done: int, total: int) -> None:
        if self.request.id:
            self.update_state(state="PROGRESS", meta={"done": done, "total": total})

    result = services.generate_round(round_id, progress=progress)
    # the round's new pairs get their margins when the project orders pairs by uncertainty
    project = Round.objects.select_related("project").get(pk=round_id).project
    active.queue_scoring(project)
    return result


@shared_task(**_limits("GENERATE"))
def generate_pair_margins(project_id: int) -> int:
    """Score the open pairs' policy margins (``training.services.active``); on the generate
    queue, where the models are."""
    return active.score_pair_margins(project_id)


@shared_task(bind=True, **_limits("TRAIN"))
def train_round(self: Task, run_id: int) -> str:
    def progress(step: int, total: int, loss: float, eta_s: float | None) -> None:
        if self.request.id:
            meta: dict[str, Any] = {"step": step, "total": total, "loss": loss, "eta_s": eta_s}
            self.update_state(state="PROGRESS", meta=meta)

    return services.train_round(run_id, progress=progress)


@shared_task
def check_triggers() -> int:
    return services.check_triggers()


@shared_task
def fail_lost_runs() -> int:
    return services.fail_lost_runs()


@shared_task
def recover_stuck_rounds() -> int:
    return services.recover_stuck_rounds()
