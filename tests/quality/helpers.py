"""Judgments written the way the queue writes them, with the order shown and the timing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from annotate import services
from annotate.models import Assignment, Comparison, Judgment


def judge(
    user: Any,
    comparison: Comparison,
    choice: str,
    *,
    left_is_a: bool = True,
    duration_ms: int | None = 5000,
    leased_seconds_ago: float = 60,
) -> Judgment:
    """Store ``user``'s judgment ("a", "b", "tie", "both_bad": what they meant)."""
    leased = timezone.now() - timedelta(seconds=leased_seconds_ago)
    Assignment.objects.create(
        comparison=comparison,
        annotator=user,
        project=comparison.project,
        left_is_a=left_is_a,
        status=Assignment.Status.DONE,
        leased_at=leased,
        lease_expires=leased + timedelta(hours=1),
    )
    judgment = Judgment.objects.create(
        comparison=comparison,
        annotator=user,
        project=comparison.project,
        choice=choice,
        left_is_a=left_is_a,
        duration_ms=duration_ms,
    )
    comparison.judgment_count += 1
    comparison.save(update_fields=["judgment_count"])
    return judgment


def shown_for(assignment: Assignment, meant: str) -> str:
    """The button to press ("left"/"right") to choose completion ``meant`` ("a"/"b")."""
    if meant not in ("a", "b"):
        return meant
    return "left" if (meant == "a") == assignment.left_is_a else "right"


def judge_next(user: Any, project: Any, meant: str) -> Judgment:
    """Take the next pair from the queue and judge it through the service functions."""
    import uuid

    assignment = services.next_assignment(project, user)
    assert assignment is not None
    judgment, _ = services.submit_judgment(
        user,
        assignment.comparison_id,
        services.JudgmentInput(choice=shown_for(assignment, meant), client_id=uuid.uuid4()),
    )
    return judgment
