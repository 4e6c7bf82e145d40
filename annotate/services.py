"""Write operations on projects, the annotation queue and judgments.

The browser views and the REST API both call these functions; each owns its
transaction. The queue itself lives in ``annotate.queue``; its public functions are
importable from here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import queue, tokens
from .errors import Conflict, InvalidInput, LeaseExpired, NotAllowed, NotFound
from .extensions import clean_contributed, judgment_recorded, split_contributed, write_contributed
from .models import Assignment, Comparison, Judgment, Membership, Project
from .prepared import Columns, from_db_time
from .progress import Progress as Progress
from .progress import progress as progress
from .queue import current_assignment as current_assignment
from .queue import next_assignment as next_assignment
from .queue import next_lease as next_lease
from .queue import release_expired_leases as release_expired_leases
from .queue import shown_task as shown_task
from .queue import skip as skip
from .selection import count_and_refresh, refresh_prompts

User = AbstractBaseUser | AnonymousUser


# --- Access ---------------------------------------------------------------------


def projects_for(user: Any) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user=user).distinct()


def get_project(user: Any, project_id: int | str, *, lead: bool = False) -> Project:
    """The project if the user is a member (a lead, when ``lead``).

    Outsiders get NotFound, not NotAllowed: a project's existence is not
    revealed to people outside it.
    """
    project, role, _, _ = _member_project(user, project_id, queue_state=False)
    if lead and role != Membership.Role.LEAD:
        raise NotAllowed("Only the project's leads can do this.")
    return project


def get_project_for_queue(
    user: Any, project_id: int | str
) -> tuple[Project, queue.QueueState, Any]:
    """As :func:`get_project`, with the user's queue state read in the same look-up (for
    ``next_lease``), and the user: ``user`` may be an unchecked ``tokens.TokenKey``, read by
    the same look-up.

    Raises:
        Unauthenticated: ``user`` is a wrong token, or an inactive user's.
    """
    project, _role, state, user = _member_project(user, project_id, queue_state=True)
    return project, queue.QueueState(*state), user


_PROJECT = Columns(Project)


def _member_project(
    user: Any, project_id: int | str, *, queue_state: bool
) -> tuple[Project, str, list[Any], Any]:
    """(the project, the user's role in it, with ``queue_state`` the columns of their queue
    state, the user), in one look-up; NotFound unless they are a member. A
    ``tokens.TokenKey`` is checked by the same look-up (Unauthenticated when it is wrong)."""
    try:
        pk = int(project_id)
    except (ValueError, TypeError):
        pk = 0
    if not 0 < pk < 2**63:
        tokens.resolve(user)
        raise NotFound("No such project.")
    if not getattr(user, "is_authenticated", False):
        raise NotFound("No such project.")
    columns, params = "", []
    if queue_state:
        columns = (
            ", CASE WHEN m.paused THEN m.paused_reason END AS queue_paused_reason,"
            + queue.STATE_COLUMNS
        )
        params = queue.state_params(timezone.now())
    by_token = isinstance(user, tokens.TokenKey)
    with connection.cursor() as cursor:
        if by_token:
            # The token's user, and the project and membership when they are a member.
            cursor.execute(
                f"SELECT {tokens.USER.select('u')}, {_PROJECT.select('p')}, m.role{columns}"  # noqa: S608
                f" FROM ({tokens.USER_BY_TOKEN}) u"
                " LEFT JOIN annotate_membership m ON m.user_id = u.id AND m.project_id = %s"
                " LEFT JOIN annotate_project p ON p.id = m.project_id",
                [*params, user.key, pk],
            )
            row = cursor.fetchone()
            user = tokens.user_from_row(row)
            row = row[len(tokens.USER.names) :]
        else:
            cursor.execute(
                f"SELECT {_PROJECT.select('p')}, m.role{columns} FROM annotate_project p"  # noqa: S608
                " JOIN annotate_membership m ON m.project_id = p.id"
                " WHERE p.id = %s AND m.user_id = %s",
                [*params, pk, user.pk],
            )
            row = cursor.fetchone()
    if row is None or row[0] is None:
        raise NotFound("No such project.")
    role, *state = row[len(_PROJECT.names) :]
    return _PROJECT.load(row), role, state, user


def can_create_projects(user: Any) -> bool:
    return bool(user.is_authenticated and user.has_perm("annotate.add_project"))


# --- Projects ------------------------------------------------------------------------


@transaction.atomic
def create_project(user: Any, **fields: Any) -> Project:
    """A new project led by ``user``; ``fields`` may include fields other apps contribute.

    Raises:
        NotAllowed: the user may not create projects.
        django.core.exceptions.ValidationError: a field is invalid (nothing is written).
    """
    if not can_create_projects(user):
        raise NotAllowed("You are not allowed to create projects.")
    own, contributed = split_contributed(fields)
    project = Project(created_by=user, **own)
    project.full_clean(exclude=["slug"])
    cleaned = clean_contributed(contributed)
    project.save()
    write_contributed(project, cleaned)
    Membership.objects.create(project=project, user=user, role=Membership.Role.LEAD)
    return project


@transaction.atomic
def update_project(user: Any, project: Project, changes: dict[str, Any]) -> Project:
    """Apply a lead's changes to the project's settings and save them.

    ``changes`` maps field names to values, as a form's or serializer's validated data; the
    model's validators check them again here, and fields other apps contribute
    (``annotate.extensions``) are cleaned and stored by their owners in the same transaction.

    Raises:
        NotFound: the user is not a member.
        NotAllowed: the user is a member but not a lead.
        InvalidInput: a field cannot be changed or a value is wrong (the message names the
            field); nothing is saved then and ``project`` keeps its values.
    """
    role = project.role_of(user)
    if role is None:
        raise NotFound("No such project.")
    if role != Membership.Role.LEAD:
        raise NotAllowed("Only the project's leads can do this.")
    changes, contributed = split_contributed(changes)
    fixed = sorted(set(changes) - set(Project.EDITABLE_FIELDS))
    if fixed:
        raise InvalidInput(f"These project fields cannot be changed: {', '.join(fixed)}.")
    before = {name: getattr(project, name) for name in changes}
    for name, value in changes.items():
        setattr(project, name, value)
    try:
        project.full_clean(
            exclude=[f.name for f in Project._meta.fields if f.name not in changes],
            validate_unique=False,
        )
    except ValidationError as exc:
        for name, value in before.items():
            setattr(project, name, value)
        raise InvalidInput(_field_messages(exc)) from None
    try:
        cleaned = clean_contributed(contributed)
    except ValidationError as exc:
        for name, value in before.items():
            setattr(project, name, value)
        raise InvalidInput(_field_messages(exc)) from None
    if changes:
        project.save(update_fields=list(changes))
    write_contributed(project, cleaned)
    return project


def _field_messages(exc: ValidationError) -> str:
    return "; ".join(f"{name}: {m}" for name, msgs in exc.message_dict.items() for m in msgs)


@transaction.atomic
def add_member(project: Project, username: str, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise InvalidInput(f"role must be one of {', '.join(Membership.Role.values)}")
    try:
        member = get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise InvalidInput(f'No user named "{username}".') from None
    membership, created = Membership.objects.get_or_create(
        project=project, user=member, defaults={"role": role}
    )
    if not created and membership.role != role:
        if membership.role == Membership.Role.LEAD:
            # Locks the project's lead rows, so two leads demoting each other at once cannot
            # both pass the count.
            leads = Membership.objects.select_for_update().filter(
                project=project, role=Membership.Role.LEAD
            )
            if len(leads) <= 1:
                raise Conflict("A project needs at least one lead: make someone else lead first.")
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


# --- The queue (annotate.queue) -------------------------------------------------------
__all__ = [
    "current_assignment",
    "next_assignment",
    "next_lease",
    "release_expired_leases",
    "shown_task",
    "skip",
]


# --- Judgments -------------------------------------------------------------------------

SHOWN_CHOICES = ("left", "right", "tie", "both_bad")


@dataclass
class JudgmentInput:
    choice: str
    client_id: uuid.UUID
    strength: int | None = None
    rationale: str = ""
    duration_ms: int | None = None


def _canonical_choice(shown: str, left_is_a: bool) -> str:
    if shown == "left":
        return Judgment.Choice.A if left_is_a else Judgment.Choice.B
    if shown == "right":
        return Judgment.Choice.B if left_is_a else Judgment.Choice.A
    return shown


def submit_judgment(user: Any, comparison_id: int, data: JudgmentInput) -> tuple[Judgment, bool]:
    """Store a judgment; returns (judgment, created).

    Idempotent on ``client_id``: a replay by the same user returns the judgment
    stored the first time and writes nothing. ``user`` may be an unchecked
    ``tokens.TokenKey``: the look-up under the pair's lock reads the user by it.

    Raises:
        Unauthenticated: ``user`` is a wrong token, or an inactive user's.
    """
    if data.choice not in SHOWN_CHOICES:
        raise InvalidInput(f"choice must be one of {', '.join(SHOWN_CHOICES)}")
    try:
        with transaction.atomic():
            return _submit(user, comparison_id, data)
    except IntegrityError:
        # A concurrent replay with the same client_id won the race.
        user = tokens.resolve(user)
        replay = Judgment.objects.filter(client_id=data.client_id).first()
        if (
            replay is not None
            and replay.annotator_id == user.pk
            and replay.comparison_id == comparison_id
        ):
            return _replayed(replay, data), False
        raise Conflict("You have already judged this pair.") from None


def _replayed(replay: Judgment, data: JudgmentInput) -> Judgment:
    """The stored judgment of a resent ``client_id``, if the resend says the same thing.

    A retry after a lost answer repeats the request; a request that reuses the id with another
    choice, strength or rationale is a different judgment, and storing either silently would
    lose one of them.
    """
    choice = _canonical_choice(data.choice, replay.left_is_a)
    strength = data.strength if data.choice in ("left", "right") else None
    if (choice, strength, data.rationale.strip()) != (
        replay.choice,
        replay.strength,
        replay.rationale,
    ):
        raise Conflict(
            "client_id was already used for a judgment with another choice, strength or rationale."
        )
    return replay


# What a submit reads, in one look-up under the pair's row lock: the pair, the project's
# settings the judgment is checked against, the user's role, their assignment and a judgment
# already stored under the request's client_id. ``Model.from_db`` takes a subset of fields in
# the model's order.
def _in_model_order(model: Any, names: set[str]) -> tuple[str, ...]:
    return tuple(f.attname for f in model._meta.concrete_fields if f.attname in names)


_PAIR_FIELDS = _in_model_order(
    Comparison, {"id", "project_id", "prompt_id", "round", "kind", "gold_choice", "judgment_count"}
)
_PROJECT_FIELDS = _in_model_order(
    Project,
    {
        "id",
        "overlap",
        "show_strength",
        "rationale",
        "gold_min_items",
        "gold_min_accuracy",
        "repeat_rate",
    },
)


# Column names from the models above: nothing from a request is formatted into the text.
def _submit_sql(by_token: bool) -> str:
    """The submit's look-up; ``by_token``: the user is read by their token in it as well (its
    columns come last, None when the token is wrong)."""
    user_id = "tu.id" if by_token else "%s"
    columns = [*(f"c.{n}" for n in _PAIR_FIELDS), *(f"p.{n}" for n in _PROJECT_FIELDS)]
    return (
        f"SELECT {', '.join(columns)},"  # noqa: S608
        " (SELECT role FROM annotate_membership"
        f"   WHERE project_id = c.project_id AND user_id = {user_id}),"
        " a.status, a.lease_expires, a.left_is_a,"
        " (SELECT id FROM annotate_judgment WHERE client_id = %s)"
        + (f", {tokens.USER.select('tu')}" if by_token else "")
        + " FROM annotate_comparison c JOIN annotate_project p ON p.id = c.project_id"
        + (f" LEFT JOIN ({tokens.USER_BY_TOKEN}) tu ON 1 = 1" if by_token else "")
        + " LEFT JOIN annotate_assignment a ON a.comparison_id = c.id"
        f" AND a.annotator_id = {user_id} WHERE c.id = %s"
    )


_SUBMIT_SQL = {by_token: _submit_sql(by_token) for by_token in (False, True)}


def _submit(user: Any, comparison_id: int, data: JudgmentInput) -> tuple[Judgment, bool]:
    client_id = Judgment._meta.get_field("client_id").get_db_prep_value(data.client_id, connection)
    by_token = isinstance(user, tokens.TokenKey)
    sql = _SUBMIT_SQL[by_token]
    if connection.features.has_select_for_update_of:
        sql += " FOR UPDATE OF c"
    params = (
        [client_id, user.key, comparison_id]
        if by_token
        else [user.pk, client_id, user.pk, comparison_id]
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        tokens.resolve(user)
        raise NotFound("No such comparison.")
    n_pair, n_project = len(_PAIR_FIELDS), len(_PROJECT_FIELDS)
    if by_token:
        user = tokens.user_from_row(row[-len(tokens.USER.names) :])
        row = row[: -len(tokens.USER.names)]
    pair_values, project_values = row[:n_pair], row[n_pair : n_pair + n_project]
    role, status, lease_expires, left_is_a, replay_id = row[n_pair + n_project :]
    if role is None:
        raise NotFound("No such comparison.")
    if replay_id is not None:
        replay = Judgment.objects.get(pk=replay_id)
        if replay.annotator_id != user.pk or replay.comparison_id != comparison_id:
            raise Conflict("client_id was already used for another judgment.")
        return _replayed(replay, data), False
    if status is None or status == Assignment.Status.SKIPPED:
        raise NotAllowed("This pair is not leased to you: ask for the next pair first.")
    if status == Assignment.Status.EXPIRED:
        raise LeaseExpired("Your lease on this pair expired: ask for the next pair.")
    if status == Assignment.Status.DONE:
        raise Conflict("You have already judged this pair.")
    now = timezone.now()
    if from_db_time(lease_expires) <= now:
        raise LeaseExpired("Your lease on this pair expired: ask for the next pair.")
    # The rest of the project's fields load if a receiver reads them.
    project = Project.from_db(connection.alias, _PROJECT_FIELDS, project_values)
    comparison = Comparison.from_db(connection.alias, _PAIR_FIELDS, pair_values)
    _validate_details(project, data)
    left_is_a = bool(left_is_a)
    judgment = Judgment(
        comparison=comparison,
        annotator=user,
        project=project,
        choice=_canonical_choice(data.choice, left_is_a),
        strength=data.strength if data.choice in ("left", "right") else None,
        rationale=data.rationale.strip(),
        left_is_a=left_is_a,
        duration_ms=data.duration_ms,
        client_id=data.client_id,
    )
    _store(judgment, comparison, user.pk)
    # The row lock (or SQLite's write lock) held since the look-up makes this the stored count.
    comparison.judgment_count += 1
    judgment_recorded.send(sender=Judgment, judgment=judgment)
    return judgment, True


_JUDGMENT_FIELDS = [f for f in Judgment._meta.concrete_fields if not f.primary_key]
_INSERT_JUDGMENT = (
    "INSERT INTO annotate_judgment ("  # noqa: S608 (column names from the model)
    + ", ".join(connection.ops.quote_name(f.attname) for f in _JUDGMENT_FIELDS)
    + ") VALUES ("
    + ", ".join(["%s"] * len(_JUDGMENT_FIELDS))
    + ") RETURNING id"
)
_CLOSE_LEASE = (
    "UPDATE annotate_assignment SET status = %s WHERE comparison_id = %s AND annotator_id = %s"
)
_COUNT_JUDGMENT = "UPDATE annotate_comparison SET judgment_count = judgment_count + 1 WHERE id = %s"


def _store(judgment: Judgment, comparison: Comparison, user_id: int) -> None:
    """Insert the judgment, mark the user's lease done, count the judgment on its pair and
    refresh its prompt's selection figures (``annotate.selection``): one statement on
    PostgreSQL, four on SQLite (which has no writing WITH clauses)."""
    values: list[Any] = [
        f.get_db_prep_save(f.pre_save(judgment, add=True), connection) for f in _JUDGMENT_FIELDS
    ]
    close: list[Any] = [Assignment.Status.DONE, comparison.pk, user_id]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            count, params = count_and_refresh(
                comparison.pk, comparison.prompt_id, judgment.choice, comparison.kind
            )
            cursor.execute(
                f"WITH j AS ({_INSERT_JUDGMENT}), a AS ({_CLOSE_LEASE}),"  # noqa: S608
                f" {count} SELECT id FROM j",
                [*values, *close, *params],
            )
            pk = cursor.fetchone()[0]
        else:
            cursor.execute(_INSERT_JUDGMENT, values)
            pk = cursor.fetchone()[0]
            cursor.execute(_CLOSE_LEASE, close)
            cursor.execute(_COUNT_JUDGMENT, [comparison.pk])
            refresh_prompts([comparison.prompt_id])
    judgment.pk = pk
    judgment._state.adding = False
    judgment._state.db = connection.alias


def _validate_details(project: Project, data: JudgmentInput) -> None:
    if data.strength is not None:
        if not project.show_strength:
            raise InvalidInput("strength: this project does not ask for strength.")
        if data.strength not in (1, 2, 3):
            raise InvalidInput("strength must be 1, 2 or 3.")
    rationale = data.rationale.strip()
    if project.rationale == Project.Rationale.REQUIRED and not rationale:
        raise InvalidInput("rationale: this project asks for a reason with every judgment.")
    if project.rationale == Project.Rationale.OFF and rationale:
        raise InvalidInput("rationale: this project does not take rationales.")
    if len(rationale) > 5000:
        raise InvalidInput("rationale: at most 5000 characters.")
    if data.duration_ms is not None and not (0 <= data.duration_ms <= 86_400_000):
        raise InvalidInput("duration_ms must be between 0 and 86400000.")


def last_undoable(project: Project, user: Any) -> Judgment | None:
    """The user's latest judgment in the project while it can still be undone."""
    latest = (
        Judgment.objects.filter(project=project, annotator=user)
        .order_by("-created_at", "-pk")
        .first()
    )
    if latest is None:
        return None
    if (timezone.now() - latest.created_at).total_seconds() > project.undo_seconds:
        return None
    return latest


def undo_judgment(
    user: Any, judgment_id: int | None = None, project: Project | None = None
) -> Assignment:
    """Delete the user's last judgment within the undo window and re-lease its pair.

    Returns the renewed assignment, so that the same pair is shown again.
    """
    with transaction.atomic():
        if judgment_id is not None:
            judgment = Judgment.objects.select_related("project").filter(pk=judgment_id).first()
            if judgment is None or judgment.annotator_id != user.pk:
                raise NotFound("No such judgment of yours.")
            project = judgment.project
        elif project is None:
            raise InvalidInput("Name a judgment or a project.")
        last = last_undoable(project, user)
        if last is None or (judgment_id is not None and last.pk != judgment_id):
            raise Conflict("Only your last judgment can be undone, within the undo window.")
        Comparison.objects.select_for_update().filter(pk=last.comparison_id).first()
        now = timezone.now()
        Assignment.objects.filter(comparison_id=last.comparison_id, annotator=user).update(
            status=Assignment.Status.ACTIVE,
            leased_at=now,
            lease_expires=now + project.lease_duration,
        )
        Comparison.objects.filter(pk=last.comparison_id).update(
            judgment_count=F("judgment_count") - 1
        )
        # The pair handed out after the undone one goes back to the pool, so
        # the undone pair is the one shown next.
        Assignment.objects.filter(
            project=project, annotator=user, status=Assignment.Status.ACTIVE
        ).exclude(comparison_id=last.comparison_id).update(status=Assignment.Status.EXPIRED)
        last.delete()
        refresh_prompts([last.comparison.prompt_id])
    return Assignment.objects.select_related(
        "comparison__prompt", "comparison__completion_a", "comparison__completion_b"
    ).get(comparison_id=last.comparison_id, annotator=user)
