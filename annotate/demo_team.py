"""A past team's judgments for the demo project, so that its Quality page has figures to show.

Four simulated annotators (they cannot log in) judged the first pairs of the demo's ready-made
pairs, two to a pair, and every one of the gold pairs. Each has a habit the Quality page is
meant to reveal: carol judges carefully, dan often picks whatever is on the left, erin prefers
the longer reply and clicks within two seconds, frank answers at random and fails the gold
pairs, so the gold rule pauses him; each also judged a few pairs a second time as hidden repeats,
where frank flips and carol hardly does. The answers they are measured against were written by hand
for these pairs (``PAIR_ANSWERS``). The judgments are stored as simulated, and the pairs have
no round, so no training round uses them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count
from django.utils import timezone

from .models import Assignment, Comparison, Judgment, Membership, Project
from .quality import gold, repeats
from .selection import refresh_prompts

# The better reply of the demo's first ready-made pairs, in file order ("tie": equally good).
PAIR_ANSWERS = (
    "a", "a", "tie", "b", "b", "a", "a", "b", "a", "a", "b", "a",
    "tie", "a", "a", "b", "tie", "b", "a", "a", "a", "b", "a", "a",
    "tie", "b", "a", "a", "a", "a", "tie", "b", "a", "b", "b", "b",
)  # fmt: skip
# Pairs marked gold (indexes into PAIR_ANSWERS): clear-cut ones, more than the rule's minimum.
GOLD = (0, 3, 5, 7, 13, 17, 19, 21, 23, 29, 33, 35)
TEAM = ("carol", "dan", "erin", "frank")
# Who judges the non-gold pairs: every two of the team in turn, so that each two share items.
_DUOS = tuple((x, y) for i, x in enumerate(TEAM) for y in TEAM[i + 1 :])
# Ordinary pairs each member judged again as a hidden repeat (sides swapped).
REPEATS = 7

Habit = Callable[[random.Random, str, bool, str | None], str]


def _careful(rng: random.Random, answer: str, left_is_a: bool, longer: str | None) -> str:
    return answer if rng.random() < 0.9 else rng.choice([c for c in "ab" if c != answer])


def _left(rng: random.Random, answer: str, left_is_a: bool, longer: str | None) -> str:
    if rng.random() < 0.6:
        return "a" if left_is_a else "b"
    return answer


def _longer(rng: random.Random, answer: str, left_is_a: bool, longer: str | None) -> str:
    if longer and rng.random() < 0.8:
        return longer
    return answer


def _random(rng: random.Random, answer: str, left_is_a: bool, longer: str | None) -> str:
    return rng.choice(("a", "b", "a", "b", "tie"))


# name -> (habit, seconds per judgment drawn uniformly from this range)
HABITS: dict[str, tuple[Habit, tuple[float, float]]] = {
    "carol": (_careful, (14.0, 48.0)),
    "dan": (_left, (8.0, 25.0)),
    "erin": (_longer, (0.8, 1.9)),
    "frank": (_random, (3.0, 12.0)),
}


def seed_team(project: Project) -> int:
    """Add the team and its judgments to a freshly seeded demo project; returns how many
    judgments were written. The draws are seeded, so every demo gets the same ones."""
    comparisons = list(
        Comparison.objects.filter(project=project, round__isnull=True)
        .select_related("completion_a", "completion_b")
        .order_by("pk")[: len(PAIR_ANSWERS)]
    )
    User = get_user_model()
    team = {}
    for name in TEAM:
        user, created = User.objects.get_or_create(username=name)
        if created:
            user.set_unusable_password()
            user.save()
        Membership.objects.get_or_create(
            project=project, user=user, defaults={"role": Membership.Role.ANNOTATOR}
        )
        team[name] = user
    for index in GOLD[: len(comparisons)]:
        comparison = comparisons[index]
        comparison.kind = Comparison.Kind.GOLD
        comparison.gold_choice = PAIR_ANSWERS[index]
        comparison.save(update_fields=["kind", "gold_choice"])
    start = timezone.now() - timedelta(days=2)
    written = 0
    for index, comparison in enumerate(comparisons):
        judges = TEAM if index in GOLD else _DUOS[index % len(_DUOS)]
        len_a, len_b = len(comparison.completion_a.text), len(comparison.completion_b.text)
        longer = "a" if len_a > len_b else "b" if len_b > len_a else None
        for name in judges:
            rng = random.Random(f"demo-team-{name}-{index}")
            habit, (fastest, slowest) = HABITS[name]
            left_is_a = rng.random() < 0.5
            choice = habit(rng, PAIR_ANSWERS[index], left_is_a, longer)
            seconds = rng.uniform(fastest, slowest)
            shown = start + timedelta(minutes=3 * index + TEAM.index(name) * 200)
            Assignment.objects.create(
                comparison=comparison,
                annotator=team[name],
                project=project,
                left_is_a=left_is_a,
                status=Assignment.Status.DONE,
                leased_at=shown,
                lease_expires=shown + project.lease_duration,
            )
            Judgment.objects.create(
                comparison=comparison,
                annotator=team[name],
                project=project,
                choice=choice,
                left_is_a=left_is_a,
                duration_ms=round(seconds * 1000),
                source=Judgment.Source.SIMULATED,
                client_id=uuid.UUID(int=rng.getrandbits(128)),
            )
            written += 1
    for row in (
        Judgment.objects.filter(comparison__in=comparisons)
        .values("comparison")
        .annotate(n=Count("pk"))
    ):
        Comparison.objects.filter(pk=row["comparison"]).update(judgment_count=row["n"])
    written += _seed_repeats(project, team, comparisons, start)
    # the per-prompt figures the disagreement and coverage pair orders read
    refresh_prompts({c.prompt_id for c in comparisons})
    for user in team.values():
        gold.apply_rule(project, user.pk)
    return written


def _seed_repeats(
    project: Project, team: dict[str, Any], comparisons: list[Comparison], start: Any
) -> int:
    """Each member judged ``REPEATS`` of their ordinary pairs a second time as hidden repeats
    (sides swapped), with the same habit, so the Quality page has flip rates to show."""
    swapped = {"a": "b", "b": "a"}
    written = 0
    for name, user in team.items():
        habit, (fastest, slowest) = HABITS[name]
        mine = [
            (index, c)
            for index, c in enumerate(comparisons)
            if index not in GOLD and name in _DUOS[index % len(_DUOS)]
        ]
        for index, original in mine[:REPEATS]:
            rng = random.Random(f"demo-repeat-later-{name}-{index}")
            repeat = Comparison.objects.create(
                project=project,
                prompt_id=original.prompt_id,
                completion_a_id=original.completion_b_id,
                completion_b_id=original.completion_a_id,
                kind=Comparison.Kind.REPEAT,
                repeat_of=original,
                repeat_for=user,
                repeat_due=repeats.REPEAT_DELAY,
                judgment_count=1,
            )
            len_a, len_b = len(original.completion_b.text), len(original.completion_a.text)
            longer = "a" if len_a > len_b else "b" if len_b > len_a else None
            answer = PAIR_ANSWERS[index]
            left_is_a = rng.random() < 0.5
            choice = habit(rng, swapped.get(answer, answer), left_is_a, longer)
            shown = start + timedelta(hours=24, minutes=3 * index + TEAM.index(name) * 200)
            Assignment.objects.create(
                comparison=repeat,
                annotator=user,
                project=project,
                left_is_a=left_is_a,
                status=Assignment.Status.DONE,
                leased_at=shown,
                lease_expires=shown + project.lease_duration,
            )
            Judgment.objects.create(
                comparison=repeat,
                annotator=user,
                project=project,
                choice=choice,
                left_is_a=left_is_a,
                duration_ms=round(rng.uniform(fastest, slowest) * 1000),
                source=Judgment.Source.SIMULATED,
                client_id=uuid.UUID(int=rng.getrandbits(128)),
            )
            written += 1
    return written
