"""Gold pairs and the pause rule.

A lead marks a comparison as gold with its right answer (on the completions: "a", "b", "tie" or
"both_bad"). After each judgment on a gold pair the judge's gold record is checked: once they
have judged ``project.gold_min_items`` gold pairs since they were last resumed, an accuracy
below ``project.gold_min_accuracy`` pauses them. A paused member gets no pairs
(``annotate.services.next_assignment``) until a lead resumes them; the rule then counts only
gold judged after the resume.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate import services
from annotate.errors import InvalidInput, NotFound
from annotate.models import Comparison, Judgment, Membership, Project

ANSWERS = tuple(Judgment.Choice.values)


@transaction.atomic
def mark_gold(user: Any, project: Project, comparison_id: int, answer: str) -> Comparison:
    """Make a comparison gold with ``answer`` as its right answer (lead only).

    Annotators who already judged it are checked against the rule at once.

    Raises:
        NotFound / NotAllowed: not a member / not a lead.
        InvalidInput: the answer is not one of the categories.
    """
    services.get_project(user, project.pk, lead=True)
    if answer not in ANSWERS:
        raise InvalidInput(f"answer must be one of {', '.join(ANSWERS)}.")
    comparison = _comparison(project, comparison_id)
    if comparison.kind == Comparison.Kind.REPEAT:
        raise InvalidInput("comparison: a hidden repeat cannot be gold; mark its original pair.")
    comparison.kind = Comparison.Kind.GOLD
    comparison.gold_choice = answer
    comparison.save(update_fields=["kind", "gold_choice"])
    for annotator_id in comparison.judgments.exclude(annotator=None).values_list(
        "annotator_id", flat=True
    ):
        apply_rule(project, annotator_id)
    return comparison


@transaction.atomic
def unmark_gold(user: Any, project: Project, comparison_id: int) -> Comparison:
    """Take a comparison out of gold: it becomes an ordinary training pair again."""
    services.get_project(user, project.pk, lead=True)
    comparison = _comparison(project, comparison_id)
    if comparison.kind == Comparison.Kind.REPEAT:
        raise InvalidInput("comparison: a hidden repeat is not gold.")
    comparison.kind = Comparison.Kind.TRAIN
    comparison.gold_choice = ""
    comparison.save(update_fields=["kind", "gold_choice"])
    return comparison


def _comparison(project: Project, comparison_id: Any) -> Comparison:
    try:
        return Comparison.objects.select_for_update().get(project=project, pk=int(comparison_id))
    except (Comparison.DoesNotExist, TypeError, ValueError):
        raise NotFound("No such comparison in this project.") from None


def gold_record(project: Project, annotator_id: int, since: Any = None) -> tuple[int, int]:
    """(gold pairs judged, of which right) for one annotator, optionally since a time."""
    judged = Judgment.objects.filter(
        project=project, annotator_id=annotator_id, comparison__gold_choice__gt=""
    )
    if since is not None:
        judged = judged.filter(created_at__gt=since)
    rows = judged.values_list("choice", "comparison__gold_choice")
    return len(rows), sum(choice == answer for choice, answer in rows)


def apply_rule(project: Project, annotator_id: int) -> bool:
    """Pause the annotator when their gold accuracy since their last resume is below the
    project's threshold after enough gold pairs; returns whether they are paused now."""
    membership = (
        Membership.objects.select_for_update().filter(project=project, user_id=annotator_id).first()
    )
    if membership is None:
        return False
    if membership.paused:
        return True
    n, right = gold_record(project, annotator_id, since=membership.resumed_at)
    if n < project.gold_min_items or right / n >= project.gold_min_accuracy:
        return False
    membership.paused = True
    membership.paused_at = timezone.now()
    membership.paused_reason = (
        f"{right} of your last {n} gold pairs matched the expected answer "
        f"({right / n:.0%}); this project asks for at least {project.gold_min_accuracy:.0%}."
    )
    membership.save(update_fields=["paused", "paused_at", "paused_reason"])
    return True


@transaction.atomic
def resume(user: Any, project: Project, username: str) -> Membership:
    """A lead lifts a member's pause; the gold rule starts counting afresh."""
    services.get_project(user, project.pk, lead=True)
    membership = (
        Membership.objects.select_for_update()
        .filter(project=project, user__username=username)
        .first()
    )
    if membership is None:
        raise NotFound(f'No member named "{username}" in this project.')
    membership.paused = False
    membership.paused_reason = ""
    membership.resumed_at = timezone.now()
    membership.save(update_fields=["paused", "paused_reason", "resumed_at"])
    return membership


def paused_reason(project: Project, user: Any) -> str | None:
    """Why the user is paused in the project, or None when they are not."""
    if not getattr(user, "is_authenticated", False):
        return None
    return (
        Membership.objects.filter(project=project, user=user, paused=True)
        .values_list("paused_reason", flat=True)
        .first()
    )


def on_judgment(sender: Any, judgment: Judgment, **kwargs: Any) -> None:
    """``judgment_recorded`` receiver: check the rule after a judgment on a gold pair."""
    if judgment.annotator_id is None:
        return
    if judgment.comparison.gold_choice:
        apply_rule(judgment.project, judgment.annotator_id)


@transaction.atomic
def pause(user: Any, project: Project, username: str, reason: str) -> Membership:
    """A lead pauses a member by hand, with the reason the member will read."""
    services.get_project(user, project.pk, lead=True)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("reason: say why, the annotator will read it.")
    if len(reason) > 300:
        raise InvalidInput("reason: at most 300 characters.")
    membership = (
        Membership.objects.select_for_update()
        .filter(project=project, user__username=username)
        .first()
    )
    if membership is None:
        raise NotFound(f'No member named "{username}" in this project.')
    membership.paused = True
    membership.paused_reason = reason
    membership.paused_at = timezone.now()
    membership.save(update_fields=["paused", "paused_reason", "paused_at"])
    return membership
