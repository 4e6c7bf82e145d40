"""Rows the API benchmarks create, and the integrity check every run ends with.

Runs inside Django (``bench._server.django_call``, or a test's own database); everything
takes and returns plain JSON data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, F, OuterRef, Q
from rest_framework.authtoken.models import Token

from annotate.datasets.imports import import_records
from annotate.models import Assignment, Comparison, Judgment, Membership, Project

# Texts of about the size a real pair has, so that serialising a task is not free.
_PROMPT = "Explain, for a reader new to the topic, how item {i} works and why it matters. "
_ANSWER = "Item {i} works like this ({side}). " + "It has a cause, an effect and a caveat. " * 12


def create_annotators(count: int, prefix: str = "bench") -> list[list[Any]]:
    """``count`` users, each with an API token; [[user id, token], ...].

    Tokens are made directly, so a run of many users never goes through the login endpoints
    (nor their throttling).
    """
    users = get_user_model().objects
    made = []
    for i in range(count):
        user = users.create(username=f"{prefix}{i}")
        made.append([user.pk, Token.objects.create(user=user).key])
    return made


def create_project(
    name: str,
    annotator_ids: Sequence[int],
    pairs: int,
    overlap: int,
    lease_seconds: int = 600,
) -> int:
    """A project with the default settings but ``overlap``, the annotators as members and
    ``pairs`` imported pairs; its id."""
    project = Project.objects.create(name=name, overlap=overlap, lease_seconds=lease_seconds)
    Membership.objects.bulk_create(
        Membership(project=project, user_id=uid, role=Membership.Role.ANNOTATOR)
        for uid in annotator_ids
    )
    rows = [
        {
            "prompt": _PROMPT.format(i=i),
            "completion_a": _ANSWER.format(i=i, side="a"),
            "completion_b": _ANSWER.format(i=i, side="b"),
        }
        for i in range(pairs)
    ]
    import_records(project, "pairs", rows)
    return project.pk


def check_integrity(project_id: int, acknowledged: Iterable[Sequence[Any]] = ()) -> dict[str, int]:
    """Count what must be zero after a run, in one project.

        ``acknowledged``: the judgments the server answered 2xx to, as
        ``(annotator id, comparison id, client_id)``.

        The counts: ``over_overlap`` pairs with more judgments than the overlap (gold pairs with
        an answer go to everyone and are left out; a hidden repeat counts as over when anyone but
        its one annotator, or anyone twice, judged it); ``twice`` annotators with two judgments on
        one pair; ``count_mismatch`` pairs whose ``judgment_count`` disagrees with their rows;
        ``missing`` acknowledged judgments not stored as acknowledged; ``dangling`` leases left
        behind: assignments still leased once every client stopped (each client judges the pair it
        holds before stopping), marked judged without a judgment, or a judgment whose assignment
        is not marked judged. ``judgments`` and ``complete_pairs`` (pairs with as many judgments as
    the overlap) are there for scale, not violations.
    """
    project = Project.objects.get(pk=project_id)
    pairs = Comparison.objects.filter(project=project)
    counted = pairs.annotate(n=Count("judgments"))
    queue_pairs = counted.exclude(kind=Comparison.Kind.GOLD, gold_choice__gt="").exclude(
        kind=Comparison.Kind.REPEAT
    )
    repeats = counted.filter(kind=Comparison.Kind.REPEAT).annotate(
        strangers=Count("judgments", filter=~Q(judgments__annotator=F("repeat_for")))
    )
    judgments = Judgment.objects.filter(project=project)
    stored = {
        (annotator, comparison, str(client_id))
        for annotator, comparison, client_id in judgments.values_list(
            "annotator_id", "comparison_id", "client_id"
        )
    }
    wanted = {(int(a), int(c), str(client_id)) for a, c, client_id in acknowledged}
    assignments = Assignment.objects.filter(project=project)
    same_pair = {
        "comparison_id": OuterRef("comparison_id"),
        "annotator_id": OuterRef("annotator_id"),
    }
    done_without_judgment = assignments.filter(status=Assignment.Status.DONE).exclude(
        Exists(Judgment.objects.filter(**same_pair))
    )
    judgment_without_done = judgments.filter(source=Judgment.Source.HUMAN).exclude(
        Exists(Assignment.objects.filter(status=Assignment.Status.DONE, **same_pair))
    )
    return {
        "judgments": len(stored),
        "complete_pairs": queue_pairs.filter(n__gte=project.overlap).count(),
        "over_overlap": queue_pairs.filter(n__gt=project.overlap).count()
        + repeats.filter(Q(n__gt=1) | Q(strangers__gt=0)).count(),
        "twice": judgments.values("comparison_id", "annotator_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count(),
        "count_mismatch": counted.exclude(judgment_count=F("n")).count(),
        "missing": len(wanted - stored),
        "dangling": assignments.filter(status=Assignment.Status.ACTIVE).count()
        + done_without_judgment.count()
        + judgment_without_done.count(),
    }
