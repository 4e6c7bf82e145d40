"""Rounds that cannot finish collecting: what blocks them, and the lead's ways out.

A round collecting judgments waits until its trigger fires. It is stalled when that can no
longer happen by itself: some of its pairs cannot reach the project's overlap with the people
available (``available_members``, less those who judged or skipped a pair for good), and a
``min_pairs`` trigger cannot make up for them either. The lead then may release the leases on
the round's open pairs, lower the round's target, or train on what is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Q, QuerySet, Value
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput
from annotate.models import Assignment, Comparison, Membership, Project

from ..loop_settings import LoopSettings
from ..models import Round, TrainingRun
from .training_data import round_pairs
from .training_runs import begin_training
from .triggers import check_trigger, round_comparisons

# Blocked pairs listed in full on the page and in the API; the rest are counted.
SHOWN_PAIRS = 20


def available_members(project: Project) -> QuerySet[Membership]:
    """The members who may be handed the project's pairs: every member who is not paused
    (``annotate.quality.gold``), leads included.

    The one rule of who counts as available for the stall analysis.
    """
    return Membership.objects.filter(project=project, paused=False).select_related("user")


def _out_for_pair(available_ids: list[int]) -> Q:
    """Assignments (from a comparison) of available members who can no longer judge the pair:
    they judged it, or skipped it for good."""
    return Q(assignments__annotator_id__in=available_ids) & (
        Q(assignments__status=Assignment.Status.DONE)
        | Q(assignments__skips__gte=Assignment.MAX_SKIPS)
    )


@dataclass
class Lease:
    comparison_id: int
    user: str
    until: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"comparison": self.comparison_id, "user": self.user, "until": self.until}


@dataclass
class BlockedPair:
    """A pair of the round that cannot reach the overlap with the people available."""

    comparison_id: int
    kind: str
    prompt: str
    judgments: int
    needed: int
    # Available people who can still judge it (not judged, not skipped twice).
    can_judge: list[str]
    leases: list[Lease]
    # (user, times skipped), for everyone who skipped it.
    skipped_by: list[tuple[str, int]]

    @property
    def short(self) -> int:
        """Judgments it will lack even if everyone who still can judges it."""
        return self.needed - self.judgments - len(self.can_judge)

    def to_dict(self) -> dict[str, Any]:
        return {
            "comparison": self.comparison_id,
            "kind": self.kind,
            "prompt": self.prompt,
            "judgments": self.judgments,
            "needed": self.needed,
            "can_judge": self.can_judge,
            "leases": [lease.to_dict() for lease in self.leases],
            "skipped_by": [{"user": u, "skips": n} for u, n in self.skipped_by],
        }


@dataclass
class Stall:
    """Why a collecting round is not finishing, and what the lead could do about it."""

    round: Round
    overlap: int
    trigger: str
    min_pairs: int
    available: list[str]
    remaining: int  # pairs below the overlap
    blocked_total: int  # of those, pairs that cannot reach it
    blocked: list[BlockedPair] = field(default_factory=list)
    # Live leases on the round's remaining pairs.
    leases: list[Lease] = field(default_factory=list)
    # Train pairs judged at least once, or that someone available can still judge.
    reachable_train: int = 0
    train_total: int = 0
    # The round's own pairs training would use now (replayed pairs come on top).
    judged_pairs: int = 0
    # Remaining pairs with a slot nobody holds: someone can be handed them now.
    free: int = 0

    @property
    def stalled(self) -> bool:
        if self.blocked_total == 0:
            return False
        return not (self.trigger == "min_pairs" and self.reachable_train >= self.min_pairs)

    @property
    def waiting_on_leases(self) -> bool:
        """Not stalled, but every slot the round still needs is leased to someone."""
        return not self.stalled and self.remaining > 0 and self.free == 0 and bool(self.leases)

    @property
    def more(self) -> int:
        """Blocked pairs not described in ``blocked``."""
        return self.blocked_total - len(self.blocked)

    @property
    def too_few_people(self) -> bool:
        return len(self.available) < self.overlap

    @property
    def suggested_target(self) -> int:
        """A ``min_pairs`` target the round can still reach."""
        return self.reachable_train

    def to_dict(self) -> dict[str, Any]:
        return {
            "stalled": self.stalled,
            "waiting_on_leases": self.waiting_on_leases,
            "overlap": self.overlap,
            "available": self.available,
            "remaining_pairs": self.remaining,
            "blocked_pairs": self.blocked_total,
            "blocked": [pair.to_dict() for pair in self.blocked],
            "leases": [lease.to_dict() for lease in self.leases],
            "reachable_train_pairs": self.reachable_train,
            "judged_pairs": self.judged_pairs,
        }


def _live_leases(comparisons: QuerySet[Comparison], now: datetime) -> list[Lease]:
    rows = (
        Assignment.objects.filter(
            comparison__in=comparisons, status=Assignment.Status.ACTIVE, lease_expires__gt=now
        )
        .select_related("annotator")
        .order_by("lease_expires", "pk")
    )
    return [Lease(a.comparison_id, a.annotator.get_username(), a.lease_expires) for a in rows]


def _blocked_pair(
    comparison: Comparison, overlap: int, available: dict[int, str], now: datetime
) -> BlockedPair:
    assignments = list(comparison.assignments.select_related("annotator").order_by("pk"))
    out = {
        a.annotator_id
        for a in assignments
        if a.status == Assignment.Status.DONE or a.skips >= Assignment.MAX_SKIPS
    }
    return BlockedPair(
        comparison_id=comparison.pk,
        kind=comparison.kind,
        prompt=comparison.prompt.preview,
        judgments=comparison.judgment_count,
        needed=overlap,
        can_judge=[name for pk, name in available.items() if pk not in out],
        leases=[
            Lease(comparison.pk, a.annotator.get_username(), a.lease_expires)
            for a in assignments
            if a.is_live(now)
        ],
        skipped_by=[(a.annotator.get_username(), a.skips) for a in assignments if a.skips],
    )


def round_stall(loop_round: Round) -> Stall | None:
    """What keeps a collecting round from finishing; None for a round not collecting.

    Reads only the round's pairs below the overlap and their assignments, in a few queries;
    blocked pairs are described in full up to ``SHOWN_PAIRS``.
    """
    if loop_round.state != Round.State.COLLECTING:
        return None
    project = loop_round.project
    overlap = project.overlap
    ls = LoopSettings.from_dict(loop_round.settings)
    now = timezone.now()
    members = list(available_members(project).order_by("user__username"))
    available = {m.user_id: m.user.get_username() for m in members}
    ids = list(available)
    pairs = round_comparisons(loop_round)
    # Per pair: how many judgments it can still get from the people available.
    capacity = pairs.annotate(
        out=Count("assignments", filter=_out_for_pair(ids), distinct=True)
    ).annotate(can_get=Value(len(ids)) - F("out"))
    remaining = capacity.filter(judgment_count__lt=overlap)
    blocked_rows = remaining.filter(judgment_count__lt=overlap - F("can_get"))
    train = capacity.filter(kind=Comparison.Kind.TRAIN)
    stall = Stall(
        round=loop_round,
        overlap=overlap,
        trigger=ls.trigger,
        min_pairs=ls.min_pairs,
        available=list(available.values()),
        remaining=remaining.count(),
        blocked_total=blocked_rows.count(),
        reachable_train=train.filter(Q(judgment_count__gte=1) | Q(can_get__gt=0)).count(),
        train_total=train.count(),
    )
    if stall.remaining:
        open_pairs = pairs.filter(judgment_count__lt=overlap)
        stall.leases = _live_leases(open_pairs, now)
        live = Q(assignments__status=Assignment.Status.ACTIVE, assignments__lease_expires__gt=now)
        stall.free = (
            open_pairs.annotate(leased=Count("assignments", filter=live))
            .filter(leased__lt=overlap - F("judgment_count"))
            .count()
        )
    if stall.blocked_total:
        shown = blocked_rows.select_related("prompt").order_by("pk")[:SHOWN_PAIRS]
        stall.blocked = [_blocked_pair(c, overlap, available, now) for c in shown]
        stall.judged_pairs = judged_pairs(loop_round)
    return stall


def judged_pairs(loop_round: Round) -> int:
    """The round's own pairs that training would use now (by the one label rule)."""
    pairs, replayed = round_pairs(loop_round, LoopSettings.from_dict(loop_round.settings))
    return len(pairs) - replayed


# --- The lead's actions ---------------------------------------------------------------------


def _collecting(loop_round: Round) -> Round:
    """The round row locked, if it still collects judgments (the caller holds a transaction)."""
    locked = Round.objects.select_for_update().select_related("project").get(pk=loop_round.pk)
    if locked.state != Round.State.COLLECTING:
        raise Conflict(f"Round {locked.number} is {locked.get_state_display().lower()}.")
    return locked


def release_leases(loop_round: Round) -> int:
    """End the live leases on the round's open pairs, so the queue offers them again;
    returns how many ended. The holders are told their lease expired if they judge."""
    with transaction.atomic():
        locked = _collecting(loop_round)
        return Assignment.objects.filter(
            comparison__in=round_comparisons(locked).filter(
                judgment_count__lt=locked.project.overlap
            ),
            status=Assignment.Status.ACTIVE,
        ).update(status=Assignment.Status.EXPIRED)


def lower_target(loop_round: Round, min_pairs: Any) -> bool:
    """Let the round train once ``min_pairs`` of its train pairs have a judgment (its trigger
    becomes ``min_pairs``); returns True when that starts training at once.

    Raises:
        InvalidInput: ``min_pairs`` is not a whole number from 1 to the round's train pairs.
        Conflict: the round no longer collects judgments.
    """
    try:
        target = int(min_pairs)
    except (TypeError, ValueError):
        raise InvalidInput(f"min_pairs: a whole number, got {min_pairs!r}.") from None
    with transaction.atomic():
        locked = _collecting(loop_round)
        total = round_comparisons(locked).filter(kind=Comparison.Kind.TRAIN).count()
        if not 1 <= target <= total:
            raise InvalidInput(
                f"min_pairs: between 1 and the round's {total} train pairs, got {target}."
            )
        locked.settings = {**locked.settings, "trigger": "min_pairs", "min_pairs": target}
        locked.save(update_fields=["settings", "updated_at"])
    return check_trigger(loop_round.pk)


def train_on_judged(loop_round: Round, confirmed_pairs: Any) -> TrainingRun:
    """Close collection and train on the pairs judged so far, as the lead confirmed.

    ``confirmed_pairs`` is the count of the round's judged pairs the lead was shown; if
    judgments came in or were undone since, nothing starts and the lead is asked again.

    Raises:
        InvalidInput: ``confirmed_pairs`` is not a number, or no pair has a majority yet.
        Conflict: the count changed, or the round no longer collects judgments.
    """
    try:
        confirmed = int(confirmed_pairs)
    except (TypeError, ValueError):
        raise InvalidInput(f"pairs: a whole number, got {confirmed_pairs!r}.") from None
    current = judged_pairs(loop_round)
    if confirmed != current:
        raise Conflict(f"The round has {current} judged pairs now, not {confirmed}: confirm again.")
    return begin_training(loop_round)
