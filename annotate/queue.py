"""The annotation queue: which pair an annotator gets next, and the leases that reserve it.

Row locks keep the queue correct under concurrency: on PostgreSQL the candidate comparison is
locked with SKIP LOCKED, on SQLite every write transaction is IMMEDIATE (see settings), which
serialises writers.

Its cost does not grow with the project. The open pairs are read off the ``queue_*`` indexes of
``Comparison`` (one per pair selection strategy), which start with (project, repeat_for,
judgment count) and then follow the queue's order: for each judgment count below the overlap
the database walks the range of the project's pairs that are not hidden repeats, in order, and
stops after ``_CANDIDATES_PER_REQUEST`` rows that pass the per-row checks (not seen by this
annotator, a free slot, not gold with an answer). The ranges' heads are merged here in the
queue's order. Rows the walk passes over are pairs this annotator already judged or skipped
that wait for other annotators, pairs whose free slots are leased right now, and gold pairs with
an answer below the overlap: their number follows the annotator's own work, the team's size and
the gold set, not the project's size.

Public names are re-exported by ``annotate.services``.
"""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .errors import NotAllowed, NotFound
from .models import Assignment, Comparison, Judgment, Membership, Project
from .selection import merge_key, queue_order, strategy_key

# How many candidates one queue request looks at before giving up; each is
# skipped only when another annotator filled its last slot meanwhile.
_CANDIDATES_PER_REQUEST = 20
_LOCK_RETRIES = 50
# Assignments whose pair the queue does not offer again: judged, or just skipped (a pair
# skipped once comes back after the rest of the queue, see ``_try_lease``).
_CLOSED = (Assignment.Status.DONE, Assignment.Status.SKIPPED)


def _held_slots(now: datetime) -> Subquery:
    """Per comparison: judged plus live-leased assignments."""
    held = (
        Assignment.objects.filter(comparison=OuterRef("pk"))
        .filter(
            Q(status=Assignment.Status.DONE)
            | Q(status=Assignment.Status.ACTIVE, lease_expires__gt=now)
        )
        .order_by()
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Subquery(held)


def _held_count(comparison: Comparison, now: datetime) -> int:
    return (
        Assignment.objects.filter(comparison=comparison)
        .filter(
            Q(status=Assignment.Status.DONE)
            | Q(status=Assignment.Status.ACTIVE, lease_expires__gt=now)
        )
        .count()
    )


def current_assignment(project: Project, user: Any) -> Assignment | None:
    """The user's live lease in this project, if they already hold one."""
    now = timezone.now()
    return (
        Assignment.objects.select_related(
            "comparison__prompt", "comparison__completion_a", "comparison__completion_b"
        )
        .filter(
            project=project, annotator=user, status=Assignment.Status.ACTIVE, lease_expires__gt=now
        )
        .order_by("leased_at")
        .first()
    )


def next_assignment(
    project: Project, user: Any, *, round_number: int | None = None
) -> Assignment | None:
    """Lease the next comparison to ``user``, or None when nothing is left for them.

    A pair is offered while fewer than ``overlap`` annotators have judged it or
    hold a live lease on it. The latest training round's pairs come first (they
    gate the next model version), then the project's pair selection order, then pairs
    closest to completion (most judgments), so that finished pairs accumulate instead of
    many half-judged ones. A pair the user skipped once comes back after the rest of their
    queue; skipped twice, never.

    Args:
        round_number: offer only that round's comparisons (a lease the user already
            holds on another round's pair is left to run out).

    Raises:
        NotAllowed: the user is paused in this project (``annotate.quality.gold``); the
            message says why.
    """
    paused = Membership.objects.filter(project=project, user=user, paused=True)
    reason = paused.values_list("paused_reason", flat=True).first()
    if reason is not None:
        raise NotAllowed(f"You are paused in this project: {reason} Ask a lead to resume you.")
    existing = current_assignment(project, user)
    if existing is not None and round_number in (None, existing.comparison.round):
        return existing
    skip_locked = connection.features.has_select_for_update_skip_locked
    for attempt in range(_LOCK_RETRIES):
        with transaction.atomic():
            assignment, contended = _try_lease(project, user, skip_locked, round_number)
        if assignment is not None or not contended:
            return assignment
        # Every open pair was being leased by someone else this instant: those
        # transactions last milliseconds, so look again rather than wrongly
        # answer "nothing left".
        time.sleep(0.01 * (attempt + 1))
    return None


def _candidates(
    project: Project, pairs: QuerySet[Comparison], now: datetime, round_number: int | None
) -> list[int]:
    """Ids of ``pairs`` still open with a free slot, in the order the queue offers them: the
    newest round first, then the project's pair selection strategy (``annotate.selection``),
    then the most judgments, then the random key.

    One index range per judgment count below the overlap, each walked in the queue's order up
    to ``_CANDIDATES_PER_REQUEST`` rows (see the module's docstring); their heads merged. Gold
    pairs with an answer are not among them: they go to everyone, beyond the
    overlap (`_gold_candidate`). A gold pair without an answer yet is served like any other.
    Hidden repeats are not among them either: each goes to its own annotator only
    (`_try_lease`).
    """
    heads: list[tuple[Any, ...]] = []
    for judged in range(project.overlap):
        heads.extend(_queue_range(project, pairs, now, round_number, judged))
    heads.sort(key=merge_key(project.pair_selection))
    return [row[-1] for row in heads[:_CANDIDATES_PER_REQUEST]]


def _queue_range(
    project: Project,
    pairs: QuerySet[Comparison],
    now: datetime,
    round_number: int | None,
    judged: int,
) -> QuerySet[Comparison, tuple[Any, ...]]:
    """The head of the open ``pairs`` with ``judged`` judgments, in the queue's order: rows of
    (round, strategy key, judgment count, random key, id), read off the strategy's index."""
    key = strategy_key(project.pair_selection)
    pairs = (
        pairs.alias(held=Coalesce(_held_slots(now), Value(0)))
        .filter(project=project, repeat_for=None, judgment_count=judged, held__lt=project.overlap)
        .exclude(kind=Comparison.Kind.REPEAT)
        .exclude(kind=Comparison.Kind.GOLD, gold_choice__gt="")
        .annotate(queue_key=Value(0) if key is None else key)
    )
    if round_number is not None:
        pairs = pairs.filter(round=round_number)
    # "repeat_for" (null throughout) leads the order so that PostgreSQL, which does not take
    # IS NULL for an equality, still sees the index's order.
    return pairs.order_by("repeat_for", *queue_order(project.pair_selection)).values_list(
        "round", "queue_key", "judgment_count", "random_key", "pk"
    )[:_CANDIDATES_PER_REQUEST]


def _try_lease(
    project: Project, user: Any, skip_locked: bool, round_number: int | None = None
) -> tuple[Assignment | None, bool]:
    """One pass over the open pairs; returns (lease, whether any pair was locked).

    Pairs the user has not been shown, or whose lease ran out unused, come first; the
    pairs they skipped once only when none of those is left. With probability
    ``project.gold_rate`` a gold pair the user has not judged comes instead, while other
    work is left for them (gold never replaces a round's pairs when one round is asked for).
    A hidden repeat of theirs that is due comes before all of these (not when a round is asked
    for: repeats belong to no round).
    """
    now = timezone.now()
    # Checked per pair on the (comparison, annotator) unique index, so that no look-up reads
    # the user's whole history.
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator=user).filter(
        Q(status__in=_CLOSED) | Q(skips__gt=0)
    )
    unseen = Comparison.objects.filter(~Exists(seen))
    if round_number is None:
        repeat = _due_repeat(project, user, unseen)
        if repeat is not None:
            return _lease(project, repeat, user, now), False
    regular = _candidates(project, unseen, now, round_number)
    if regular and round_number is None and random.random() < project.gold_rate:
        gold = _gold_candidate(project, unseen)
        if gold is not None:
            return _lease(project, gold, user, now), False
    comparison, contended = _lock_first(project, regular, now, skip_locked)
    if comparison is None and not contended:
        skipped_once = Assignment.objects.filter(
            annotator=user, project=project, skips__gt=0, skips__lt=Assignment.MAX_SKIPS
        ).exclude(status=Assignment.Status.DONE)
        returning = Comparison.objects.filter(
            pk__in=list(skipped_once.values_list("comparison_id", flat=True))
        )
        comparison, contended = _lock_first(
            project, _candidates(project, returning, now, round_number), now, skip_locked
        )
    if comparison is None:
        return None, contended
    return _lease(project, comparison, user, now), False


def _due_repeat(project: Project, user: Any, unseen: QuerySet[Comparison]) -> Comparison | None:
    """The user's earliest hidden repeat that is due and not yet judged or skipped, if any
    (``annotate.quality.repeats``).

    ``unseen``: the comparisons the user has not judged or skipped. One look-up on the
    ``pending_repeats`` index; the user's judgments are counted only when a repeat waits. A
    repeat whose original judgment was undone waits until the original is judged again.
    """
    judged = Judgment.objects.filter(comparison_id=OuterRef("repeat_of_id"), annotator=user)
    pending = (
        unseen.filter(repeat_for=user, project=project, judgment_count=0)
        .filter(Exists(judged))
        .order_by("repeat_due", "pk")
        .values_list("pk", "repeat_due")
        .first()
    )
    if pending is None:
        return None
    pk, due = pending
    if due and Judgment.objects.filter(project=project, annotator=user).count() < due:
        return None
    return Comparison.objects.filter(pk=pk).first()


def _gold_candidate(project: Project, unseen: QuerySet[Comparison]) -> Comparison | None:
    """A gold pair of the project that the user has not been shown (or not judged yet).

    Gold is served to every annotator whatever its judgment count, so no slot is counted and
    no row lock is needed: one assignment per user and pair is a database constraint. The
    project's gold pairs are read off the ``pairs_by_kind`` index.
    """
    return (
        unseen.filter(project=project, kind=Comparison.Kind.GOLD)
        .exclude(gold_choice="")
        .order_by("?")
        .first()
    )


def _lock_first(
    project: Project, candidate_ids: list[int], now: datetime, skip_locked: bool
) -> tuple[Comparison | None, bool]:
    """The first candidate with a free slot, row-locked; and whether any was locked by others."""
    contended = False
    for pk in candidate_ids:
        rows = Comparison.objects.filter(pk=pk)
        if skip_locked:
            # Never wait on a lock: waiting while holding one can deadlock.
            rows = rows.select_for_update(skip_locked=True)
        comparison = rows.first()
        if comparison is None:
            contended = True
            continue
        # Count again under the row lock: the first count may predate a lease
        # that another transaction committed since.
        if _held_count(comparison, now) >= project.overlap:
            continue
        return comparison, contended
    return None, contended


def _lease(project: Project, comparison: Comparison, user: Any, now: datetime) -> Assignment:
    expires = now + project.lease_duration
    assignment = Assignment.objects.filter(comparison=comparison, annotator=user).first()
    if assignment is None:
        assignment = Assignment.objects.create(
            comparison=comparison,
            annotator=user,
            project=project,
            left_is_a=random.random() < 0.5,
            leased_at=now,
            lease_expires=expires,
        )
    else:
        # An earlier lease of this user's expired unused, or a pair they skipped once
        # comes back: renew it and keep the order they were shown, so a position is
        # never re-drawn.
        assignment.status = Assignment.Status.ACTIVE
        assignment.leased_at = now
        assignment.lease_expires = expires
        assignment.save(update_fields=["status", "leased_at", "lease_expires"])
    return Assignment.objects.select_related(
        "comparison__prompt", "comparison__completion_a", "comparison__completion_b"
    ).get(pk=assignment.pk)


@transaction.atomic
def skip(project: Project, user: Any, comparison_id: int) -> None:
    """Put the leased pair back: it returns to this user after the rest of their queue, and
    a second skip takes it out of their queue for good (others still get it)."""
    updated = Assignment.objects.filter(
        project=project,
        annotator=user,
        comparison_id=comparison_id,
        status=Assignment.Status.ACTIVE,
    ).update(status=Assignment.Status.SKIPPED, skips=F("skips") + 1)
    if not updated:
        raise NotFound("That pair is not leased to you.")


def release_expired_leases() -> int:
    """Mark leases past their expiry as expired; returns how many.

    The queue already treats them as free slots; this keeps the table honest
    for the lead's statistics. The row stays, with the order it was shown in.
    """
    now = timezone.now()
    with transaction.atomic():
        return Assignment.objects.filter(
            status=Assignment.Status.ACTIVE, lease_expires__lte=now
        ).update(status=Assignment.Status.EXPIRED)
