"""Rounds whose task is gone: found by the beat and sent on their way again.

A round moves from state to state inside Celery tasks. When the task is lost, the round stays
where it was: a worker killed while sampling (SIGKILL, out of memory, a machine gone) leaves it
generating, one killed while gating leaves it evaluating, and a message that could not be sent
(the broker was down, see ``dispatch``) leaves a training run queued that no worker will ever
claim. Nothing would move such a round again.

``recover_stuck_rounds`` finds the rounds that have not changed for
``PREFLOOP_ROUND_STALE_SECONDS`` in one of those states (evaluating: the longer
``PREFLOOP_TRAIN_STALE_SECONDS``, as the gate samples without reporting progress) and queues their
task once more. Every
task is safe to run twice (each checks the round's state under its row lock before writing,
see ``training.services``), so a round whose task was only slow is not harmed: the second
delivery finds the work done and returns. A training run that was claimed and then lost is
``fail_lost_runs``' business (the round fails and the lead may retry), not this module's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import ModelVersion, Round, TrainingRun
from . import dispatch
from .gate_rules import WAITING

log = logging.getLogger(__name__)


def _waits_for_people(loop_round: Round) -> bool:
    """An evaluating round whose human gate is open: it waits for judgments, not for a task."""
    version = ModelVersion.objects.filter(trained_in=loop_round).first()
    return version is not None and version.gate.get("decision") == WAITING


def _task_for(loop_round: Round) -> tuple[str, int] | None:
    """The task that carries the (locked) round on, with its argument; None if none is owed."""
    if loop_round.state == Round.State.GENERATING:
        return dispatch.GENERATE_ROUND, loop_round.pk
    run = loop_round.latest_run()
    if run is None:
        return None
    if loop_round.state == Round.State.TRAINING and run.state == TrainingRun.State.QUEUED:
        return dispatch.TRAIN_ROUND, run.pk
    if (
        loop_round.state == Round.State.EVALUATING
        and run.state == TrainingRun.State.SUCCEEDED
        and not _waits_for_people(loop_round)
    ):
        # train_round of a run that succeeded gates its round (see training_runs.train_round)
        return dispatch.TRAIN_ROUND, run.pk
    return None


def recover_stuck_rounds(now: datetime | None = None) -> int:
    """For the beat: queue again the task of every round stuck generating, training (its run
    never claimed) or evaluating; returns how many were queued.

    A re-queued round is marked as changed now, so it is queued again only after another
    stale period.
    """
    now = now or timezone.now()
    round_stale = now - timedelta(seconds=settings.PREFLOOP_ROUND_STALE_SECONDS)
    before: dict[str, datetime] = {
        Round.State.GENERATING: round_stale,
        Round.State.TRAINING: round_stale,
        Round.State.EVALUATING: now - timedelta(seconds=settings.PREFLOOP_TRAIN_STALE_SECONDS),
    }
    stale = Q()
    for state, limit in before.items():
        stale |= Q(state=state, updated_at__lt=limit)
    stuck = Round.objects.filter(stale).values_list("pk", flat=True)
    queued = 0
    for round_id in list(stuck):
        with transaction.atomic():
            locked = Round.objects.select_for_update().filter(pk=round_id).first()
            if locked is None or locked.state not in before:
                continue
            if locked.updated_at >= before[locked.state]:
                continue
            task = _task_for(locked)
            if task is None:
                continue
            log.warning("%s is stuck %s: queuing %s again", locked, locked.state, task[0])
            locked.save(update_fields=["updated_at"])
            dispatch.enqueue(*task)
            queued += 1
    return queued
