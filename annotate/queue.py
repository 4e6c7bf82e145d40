"""The annotation queue: which pair an annotator gets next, and the leases that reserve it.

Row locks keep the queue correct under concurrency: on PostgreSQL the candidates are read
row-locked with SKIP LOCKED (concurrent requests pass over each other's rows), and the lease's
insert counts the pair's slots again under that lock; on SQLite every write transaction is
IMMEDIATE (see settings), which serialises writers.

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

Its cost per request is a handful of statements (a round trip to the database server costs more
than most of these statements take to run): the member's queue state in one look-up (with the
project, from the API), every range in one statement compiled once (``annotate.prepared``),
and the lease in one insert that checks the free slot itself (on PostgreSQL the same statement
reads what the task shows).

Public names are re-exported by ``annotate.services``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .errors import NotAllowed, NotFound
from .models import Assignment, Comparison, Judgment, Project, Prompt
from .prepared import Prepared, from_db_time, to_db_time
from .selection import merge_key, queue_order, strategy_key

# How many candidates one queue request reads per judgment-count range before giving up (it
# then looks again); each is passed over only when another annotator filled its last slot
# since the look-up read it. Few, because on PostgreSQL every candidate read is row-locked
# until the lease commits, and locking a row writes to it: 20 per range made the look-up
# 3.4 times as slow as 3 (1.5 against 0.45 ms of the database's time per request).
_CANDIDATES_PER_REQUEST = 3
_LOCK_RETRIES = 50
# Assignments whose pair the queue does not offer again: judged, or just skipped (a pair
# skipped once comes back after the rest of the queue, see ``_try_lease``).
_CLOSED = (Assignment.Status.DONE, Assignment.Status.SKIPPED)
_MESSAGES = Prompt._meta.get_field("messages")


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


def _load(assignment_id: int) -> Assignment:
    return Assignment.objects.select_related(
        "comparison__prompt", "comparison__completion_a", "comparison__completion_b"
    ).get(pk=assignment_id)


# What a task shows, read with the lease ``a``: the pair, its prompt's messages, both
# completions (text and whether the model finished), the side A is shown on, the lease's end.
_SHOWN_COLUMNS = (
    "a.comparison_id, a.left_is_a, a.lease_expires, p.messages,"
    " ca.text, ca.finished, cb.text, cb.finished"
)
_SHOWN_JOINS = (
    " JOIN annotate_comparison c ON c.id = a.comparison_id"
    " JOIN annotate_prompt p ON p.id = c.prompt_id"
    " JOIN annotate_completion ca ON ca.id = c.completion_a_id"
    " JOIN annotate_completion cb ON cb.id = c.completion_b_id"
)


@dataclass(frozen=True)
class Lease:
    """An assignment the queue handed out: its id and, when the statement that made it read
    them too (a new lease on PostgreSQL), the columns of what its task shows."""

    id: int
    shown: tuple[Any, ...] | None = None


def shown_task(lease: Lease) -> dict[str, Any]:
    """What the API shows of a lease: the pair, its prompt's messages, the completions in the
    order the annotator sees them (text and whether the model finished) and when the lease runs
    out. Read in one look-up, unless the lease's statement read it already."""
    row = lease.shown
    if row is None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {_SHOWN_COLUMNS} FROM annotate_assignment a{_SHOWN_JOINS}"  # noqa: S608
                " WHERE a.id = %s",
                [lease.id],
            )
            row = cursor.fetchone()
    comparison, left_is_a, expires, messages, a_text, a_done, b_text, b_done = row
    a = {"text": a_text, "finished": None if a_done is None else bool(a_done)}
    b = {"text": b_text, "finished": None if b_done is None else bool(b_done)}
    left, right = (a, b) if left_is_a else (b, a)
    return {
        "comparison": comparison,
        "messages": _MESSAGES.from_db_value(messages, cast(Any, None), connection),
        "left": left,
        "right": right,
        "lease_expires": from_db_time(expires),
    }


@dataclass(frozen=True)
class QueueState:
    """What the queue reads about a member before leasing: why they are paused (None when they
    are not), their live lease in the project (the earliest, if any), the smallest due count
    of judgments of their hidden repeats still waiting (None when none waits) and, only while
    one waits, how many judgments they have made in the project."""

    paused_reason: str | None
    live_lease: int | None
    first_repeat_due: int | None
    judged: int | None = None

    def judged_if_repeat_may_be_due(self) -> int | None:
        """The member's judgments in the project when a hidden repeat of theirs may be due (one
        waits whose due count they have reached; ``_due_repeat`` has the last word), else
        None."""
        if self.first_repeat_due is None or self.judged is None:
            return None
        return self.judged if self.judged >= self.first_repeat_due else None


# The queue state's lease and repeat columns, for a query where ``m`` is the membership: its
# parameters are the active status and the time now. The member's judgments are counted only
# while a hidden repeat of theirs waits, the one case the queue needs them.
_WAITING_REPEATS = (
    " FROM annotate_comparison c WHERE c.repeat_for_id = m.user_id"
    " AND c.project_id = m.project_id AND c.judgment_count = 0"
)
STATE_COLUMNS = (
    " (SELECT a.id FROM annotate_assignment a WHERE a.annotator_id = m.user_id"  # noqa: S608
    "   AND a.project_id = m.project_id AND a.status = %s AND a.lease_expires > %s"
    "   ORDER BY a.leased_at LIMIT 1) AS live_lease,"
    f" (SELECT MIN(COALESCE(c.repeat_due, 0)){_WAITING_REPEATS}) AS first_repeat_due,"
    f" CASE WHEN EXISTS (SELECT 1{_WAITING_REPEATS}) THEN (SELECT COUNT(*)"
    "   FROM annotate_judgment j WHERE j.project_id = m.project_id"
    "   AND j.annotator_id = m.user_id) END AS member_judged"
)


def state_params(now: datetime) -> list[Any]:
    return [Assignment.Status.ACTIVE, to_db_time(now)]


def _state(project: Project, user_id: int, now: datetime) -> QueueState:
    """The user's queue state in the project, in one look-up (not a member: not paused, nothing
    leased, nothing waiting)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN m.paused THEN m.paused_reason END, "  # noqa: S608
            + STATE_COLUMNS
            + " FROM annotate_membership m WHERE m.project_id = %s AND m.user_id = %s",
            [*state_params(now), project.pk, user_id],
        )
        row = cursor.fetchone()
    return QueueState(*row) if row else QueueState(None, None, None)


def current_assignment(project: Project, user: Any) -> Assignment | None:
    """The user's live lease in this project, if they already hold one."""
    lease = _state(project, user.pk, timezone.now()).live_lease
    return None if lease is None else _load(lease)


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
    lease = next_lease(project, user, round_number=round_number)
    return None if lease is None else _load(lease.id)


def next_lease(
    project: Project,
    user: Any,
    *,
    round_number: int | None = None,
    state: QueueState | None = None,
) -> Lease | None:
    """As :func:`next_assignment`, returning the lease (the API reads what it shows with
    :func:`shown_task`). ``state``: the user's queue state, when the caller read it with the
    project (``annotate.services.get_project``) moments ago."""
    if state is None:
        state = _state(project, user.pk, timezone.now())
    if state.paused_reason is not None:
        raise NotAllowed(
            f"You are paused in this project: {state.paused_reason} Ask a lead to resume you."
        )
    existing = state.live_lease
    if existing is not None and (
        round_number is None
        or Assignment.objects.filter(pk=existing, comparison__round=round_number).exists()
    ):
        return Lease(existing)
    judged = state.judged_if_repeat_may_be_due()
    skip_locked = connection.features.has_select_for_update_skip_locked
    for attempt in range(_LOCK_RETRIES):
        with transaction.atomic():
            lease, contended = _try_lease(project, user.pk, skip_locked, round_number, judged)
        if lease is not None or not contended:
            return lease
        # Every open pair was being leased by someone else this instant: those
        # transactions last milliseconds, so look again rather than wrongly
        # answer "nothing left".
        time.sleep(0.01 * (attempt + 1))
    return None


def _candidates(
    project: Project,
    user_id: int | None,
    now: datetime,
    round_number: int | None,
    among: list[int] | None = None,
    lock: bool = True,
) -> list[int]:
    """Ids of the open pairs with a free slot that ``user_id`` has not judged or skipped (any
    user's, when None), in the order the queue offers them: the newest round first, then the
    project's pair selection strategy (``annotate.selection``), then the most judgments, then
    the random key. ``among``: only these pairs (the ones a user skipped once).

    With ``lock``, a user and no ``among`` (the queue's everyday look-up), on a database with
    row locks, the pairs come row-locked for the rest of the transaction, and pairs that
    another request has locked at this instant are left out (SKIP LOCKED), so that concurrent
    requests spread over the queue's head instead of queueing on one pair.

    One index range per judgment count below the overlap, each walked in the queue's order up
    to ``_CANDIDATES_PER_REQUEST`` rows (see the module's docstring); their heads merged. Gold
    pairs with an answer are not among them: they go to everyone, beyond the
    overlap (`_gold_candidate`). A gold pair without an answer yet is served like any other.
    Hidden repeats are not among them either: each goes to its own annotator only
    (`_try_lease`).
    """
    heads: list[tuple[Any, ...]] = []
    if lock and among is None and user_id is not None:
        # Every range in one statement: the compiled range query once per judgment count.
        prepared = _RANGES[(project.pair_selection, round_number is not None)]
        parts, params = [], []
        for judged in range(project.overlap):
            sql, values = prepared.sql_with_params(
                project=project.pk,
                user=user_id,
                judged=judged,
                overlap=project.overlap,
                round=round_number or 0,
                now=now,
            )
            # compiled by the ORM; the request's values are parameters
            parts.append(f"SELECT * FROM ({sql}) AS range_{judged}")  # noqa: S608
            params.extend(values)
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            heads.extend(cursor.fetchall())
    else:
        for judged in range(project.overlap):
            heads.extend(
                _queue_range(
                    project.pair_selection,
                    project.pk,
                    project.overlap,
                    judged,
                    now,
                    round_number,
                    user_id,
                    among,
                )
            )
    heads.sort(key=merge_key(project.pair_selection))
    return [row[-1] for row in heads[:_CANDIDATES_PER_REQUEST]]


def _queue_range(
    strategy: str,
    project: int,
    overlap: int,
    judged: int,
    now: datetime,
    round_number: int | None,
    user: int | None = None,
    among: list[int] | None = None,
    lock: bool = False,
) -> QuerySet[Comparison, tuple[Any, ...]]:
    """The head of the project's open pairs with ``judged`` judgments, in the queue's order:
    rows of (round, strategy key, judgment count, random key, id), read off the strategy's
    index. ``user``: only pairs they have not judged or skipped; ``among``: only these;
    ``lock``: row-locked, passing over rows that others hold locked."""
    key = strategy_key(strategy)
    pairs = Comparison.objects.all()
    if user is not None:
        # Checked per pair on the (comparison, annotator) unique index, so that no look-up
        # reads the user's whole history.
        seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator_id=user).filter(
            Q(status__in=_CLOSED) | Q(skips__gt=0)
        )
        pairs = pairs.filter(~Exists(seen))
    if among is not None:
        pairs = pairs.filter(pk__in=among)
    pairs = (
        pairs.alias(held=Coalesce(_held_slots(now), Value(0)))
        .filter(project_id=project, repeat_for=None, judgment_count=judged, held__lt=overlap)
        .filter(Comparison.work())
        .annotate(queue_key=Value(0) if key is None else key)
    )
    if round_number is not None:
        pairs = pairs.filter(round=round_number)
    if lock:
        pairs = pairs.select_for_update(skip_locked=True, of=("self",))
    # "repeat_for" (null throughout) leads the order so that PostgreSQL, which does not take
    # IS NULL for an equality, still sees the index's order.
    return pairs.order_by("repeat_for", *queue_order(strategy)).values_list(
        "round", "queue_key", "judgment_count", "random_key", "pk"
    )[:_CANDIDATES_PER_REQUEST]


def _prepared_range(strategy: str, by_round: bool) -> Prepared:
    def build(
        project: int, user: int, judged: int, overlap: int, now: datetime, round: int = 0
    ) -> QuerySet[Comparison, tuple[Any, ...]]:
        lock = connection.features.has_select_for_update_skip_locked
        return _queue_range(
            strategy, project, overlap, judged, now, round if by_round else None, user, lock=lock
        )

    ints = ["project", "user", "judged", "overlap"] + (["round"] if by_round else [])
    return Prepared(build, ints=ints, times=["now"])


# One compiled range query per strategy, with and without a round filter.
_RANGES = {
    (strategy, by_round): _prepared_range(strategy, by_round)
    for strategy in Project.PairSelection.values
    for by_round in (False, True)
}


def _unseen(user_id: int) -> QuerySet[Comparison]:
    """The comparisons the user has not judged or skipped."""
    seen = Assignment.objects.filter(comparison=OuterRef("pk"), annotator_id=user_id).filter(
        Q(status__in=_CLOSED) | Q(skips__gt=0)
    )
    return Comparison.objects.filter(~Exists(seen))


def _try_lease(
    project: Project,
    user_id: int,
    skip_locked: bool,
    round_number: int | None = None,
    judged: int | None = None,
) -> tuple[Lease | None, bool]:
    """One pass over the open pairs; returns (the lease, whether any pair was locked).

    Pairs the user has not been shown, or whose lease ran out unused, come first; the
    pairs they skipped once only when none of those is left. With probability
    ``project.gold_rate`` a gold pair the user has not judged comes instead, while other
    work is left for them (gold never replaces a round's pairs when one round is asked for).
    A hidden repeat of theirs that is due comes before all of these (not when a round is asked
    for: repeats belong to no round); ``judged``: the user's judgment count when a repeat may be
    due (:meth:`QueueState.judged_if_repeat_may_be_due`), None when none can be.
    """
    now = timezone.now()
    if round_number is None and judged is not None:
        repeat = _due_repeat(project, user_id, _unseen(user_id), judged)
        if repeat is not None:
            return _lease(project, repeat, user_id, now), False
    regular = _candidates(project, user_id, now, round_number)
    if regular and round_number is None and random.random() < project.gold_rate:
        gold = _gold_candidate(project, user_id)
        if gold is not None:
            return _lease(project, gold, user_id, now), False
    lease, contended = _lease_first(project, regular, user_id, now, lock_each=False)
    if lease is None and not regular and skip_locked:
        # The look-up passed over pairs that other requests held locked this instant: nothing
        # is left only when no open pair is there at all.
        contended = bool(_candidates(project, user_id, now, round_number, lock=False))
    if lease is None and not contended:
        skipped_once = list(
            Assignment.objects.filter(
                annotator_id=user_id,
                project=project,
                skips__gt=0,
                skips__lt=Assignment.MAX_SKIPS,
            )
            .exclude(status=Assignment.Status.DONE)
            .values_list("comparison_id", flat=True)
        )
        if skipped_once:
            returning = _candidates(project, None, now, round_number, among=skipped_once)
            lease, contended = _lease_first(project, returning, user_id, now, skip_locked)
    return lease, (lease is None and contended)


def _due_repeat(
    project: Project, user_id: int, unseen: QuerySet[Comparison], judged: int
) -> int | None:
    """The id of the user's earliest hidden repeat that is due and not yet judged or skipped,
    if any (``annotate.quality.repeats``).

    ``unseen``: the comparisons the user has not judged or skipped; ``judged``: their judgments
    in the project. One look-up on the ``pending_repeats`` index. A repeat whose original
    judgment was undone waits until the original is judged again.
    """
    original_judged = Judgment.objects.filter(
        comparison_id=OuterRef("repeat_of_id"), annotator_id=user_id
    )
    pending = (
        unseen.filter(repeat_for_id=user_id, project=project, judgment_count=0)
        .filter(Exists(original_judged))
        .order_by("repeat_due", "pk")
        .values_list("pk", "repeat_due")
        .first()
    )
    if pending is None:
        return None
    pk, due = pending
    if due and judged < due:
        return None
    return int(pk)


def _gold_candidate(project: Project, user_id: int) -> int | None:
    """The id of a gold pair of the project that the user has not been shown (or not judged
    yet), drawn at random.

    Gold is served to every annotator whatever its judgment count, so no slot is counted and
    no row lock is needed: one assignment per user and pair is a database constraint. The draw
    is the first such pair at or after a random point of the pairs' random keys (wrapping round
    to the start), read off the ``pairs_by_kind_key`` index: its cost follows the user's own
    gold history, not the size of the project's gold set. One plain statement: a draw comes
    with one next in ten by default, and building it with the ORM cost more than running it.
    """
    start = random.random()
    unseen_gold: list[Any] = [project.pk, Comparison.Kind.GOLD, user_id, *_CLOSED]
    with connection.cursor() as cursor:
        cursor.execute(_GOLD_DRAW, [*unseen_gold, start, *unseen_gold, start])
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


# The unseen gold pairs with an answer (parameters: the project, the gold kind, the user and the
# closed statuses) from a random key on, else from the start.
_UNSEEN_GOLD = (
    "SELECT c.id FROM annotate_comparison c WHERE c.project_id = %s AND c.kind = %s"
    " AND c.gold_choice <> '' AND NOT EXISTS (SELECT 1 FROM annotate_assignment a"
    "   WHERE a.comparison_id = c.id AND a.annotator_id = %s"
    "   AND (a.status IN (%s, %s) OR a.skips > 0))"
)
_GOLD_DRAW = (
    f"SELECT COALESCE(({_UNSEEN_GOLD} AND c.random_key >= %s ORDER BY c.random_key LIMIT 1),"  # noqa: S608
    f" ({_UNSEEN_GOLD} AND c.random_key < %s ORDER BY c.random_key LIMIT 1))"
)


def _lease_first(
    project: Project, candidate_ids: list[int], user_id: int, now: datetime, lock_each: bool
) -> tuple[Lease | None, bool]:
    """Lease the first candidate that still has a free slot; returns the lease and whether
    any candidate was locked or filled by others meanwhile. ``lock_each``: lock each candidate's
    row first (the candidates were read without locks).

    Without row locks (SQLite) the transaction holds the database's write lock from its start,
    so the first candidate's free slot, counted in the same transaction, is still free.
    """
    contended = False
    for pk in candidate_ids:
        if lock_each:
            with connection.cursor() as cursor:
                # Never wait on a lock: waiting while holding one can deadlock.
                cursor.execute(
                    "SELECT id FROM annotate_comparison WHERE id = %s FOR UPDATE SKIP LOCKED", [pk]
                )
                locked = cursor.fetchone()
            if locked is None:
                contended = True
                continue
        # The slots are counted again under the row lock: the first count may predate a
        # lease that another transaction committed since.
        lease = _lease(project, pk, user_id, now, slots=project.overlap)
        if lease is not None:
            return lease, contended
        # Others leased its last slot since the candidates were read: the queue moved, which
        # is not "nothing left".
        contended = True
    return None, contended


# A lease of a pair whose slots are not counted (gold, hidden repeats).
_UNCOUNTED = 2**31 - 1


_LEASE = (
    "INSERT INTO annotate_assignment"
    " (comparison_id, annotator_id, project_id, left_is_a, status, leased_at,"
    " lease_expires, skips) SELECT %s, %s, %s, %s, %s, %s, %s, 0"
    " WHERE (SELECT COUNT(*) FROM annotate_assignment WHERE comparison_id = %s"
    "   AND (status = %s OR (status = %s AND lease_expires > %s))) < %s"
    " ON CONFLICT (comparison_id, annotator_id) DO UPDATE SET status = excluded.status,"
    " leased_at = excluded.leased_at, lease_expires = excluded.lease_expires"
)
# On PostgreSQL the lease's statement reads what its task shows as well.
_LEASE_AND_SHOW = (
    f"WITH a AS ({_LEASE} RETURNING id, comparison_id, left_is_a, lease_expires)"  # noqa: S608
    f" SELECT a.id, {_SHOWN_COLUMNS} FROM a{_SHOWN_JOINS}"
)


def _lease(
    project: Project, comparison_id: int, user_id: int, now: datetime, slots: int = _UNCOUNTED
) -> Lease | None:
    """Lease the pair to the user while fewer than ``slots`` assignments hold it (judged or
    leased live); returns the lease, or None when the slots are taken.

    A new assignment draws the side A is shown on. An earlier lease of this user's that expired
    unused, or a pair they skipped once that comes back, is renewed and keeps the order they
    were shown, so a position is never re-drawn.
    """
    show = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        cursor.execute(
            _LEASE_AND_SHOW if show else _LEASE + " RETURNING id",
            [
                comparison_id,
                user_id,
                project.pk,
                random.random() < 0.5,
                Assignment.Status.ACTIVE,
                to_db_time(now),
                to_db_time(now + project.lease_duration),
                comparison_id,
                Assignment.Status.DONE,
                Assignment.Status.ACTIVE,
                to_db_time(now),
                slots,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return Lease(int(row[0]), tuple(row[1:]) if show else None)


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
