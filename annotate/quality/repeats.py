"""Hidden repeats: does an annotator give the same answer to the same pair twice?

After a member's judgment on an ordinary pair, with probability ``project.repeat_rate`` the pair
is scheduled to come back to that member: a new comparison of kind "repeat", linked to the
original by ``repeat_of``, with the same completions as A and B swapped (a different id, and no
constraint ties it to the original, so nothing in the pair gives the repeat away; left and right
are drawn as for any pair). It is served only to that member (``repeat_for``), before their
ordinary pairs, once they have made ``REPEAT_DELAY`` further judgments in the project (the
queue's ``annotate.queue._due_repeat``).

A repeat has no round and is never part of the overlap, progress, a round's trigger or stall
analysis, training pairs or any export (``annotate.datasets.labels`` leaves the kind out). A
repeat that the member skips is dropped: it is a check, not work.

Flip rate: among repeats where both the original judgment and the repeat chose a side (A or B,
un-swapped to the original's completions), the share where the repeat chose the other
completion. A tie or both-bad on either side carries no preference to contradict, so such a
repeat is counted in ``repeats`` but not in ``flip_items``.
"""

from __future__ import annotations

import math
import random
from typing import Any

from django.db.models import OuterRef, Subquery

from annotate.models import Comparison, Judgment, Project

# Judgments an annotator makes between a pair and its repeat: far enough that they are unlikely
# to remember the first answer, near enough that a short session still sees its repeats.
REPEAT_DELAY = 20
# The normal quantile of a two-sided 95% interval.
_Z95 = 1.959963984540054
_SWAPPED = {Judgment.Choice.A: Judgment.Choice.B, Judgment.Choice.B: Judgment.Choice.A}
_SIDES = (Judgment.Choice.A, Judgment.Choice.B)


def on_judgment(sender: Any, judgment: Judgment, **kwargs: Any) -> None:
    """``judgment_recorded`` receiver: schedule a repeat with probability ``repeat_rate``."""
    if judgment.annotator_id is None:
        return
    rate = judgment.project.repeat_rate
    if rate > 0 and random.random() < rate:
        schedule(judgment)


def schedule(judgment: Judgment) -> Comparison | None:
    """A repeat of the judged pair for its judge, due ``REPEAT_DELAY`` judgments later.

    None when the pair is itself a repeat, or already has a repeat for this judge (a judgment
    undone and made again).
    """
    original = Comparison.objects.filter(pk=judgment.comparison_id).first()
    if original is None or original.kind == Comparison.Kind.REPEAT:
        return None
    if Comparison.objects.filter(repeat_of=original, repeat_for_id=judgment.annotator_id).exists():
        return None
    made = Judgment.objects.filter(
        project_id=original.project_id, annotator_id=judgment.annotator_id
    ).count()
    return Comparison.objects.create(
        project_id=original.project_id,
        prompt_id=original.prompt_id,
        completion_a_id=original.completion_b_id,
        completion_b_id=original.completion_a_id,
        round=None,
        kind=Comparison.Kind.REPEAT,
        repeat_of=original,
        repeat_for_id=judgment.annotator_id,
        repeat_due=made + REPEAT_DELAY,
    )


def unswapped(choice: str) -> str:
    """A repeat's choice on the original pair's completions: A and B trade places."""
    return _SWAPPED.get(choice, choice)  # type: ignore[call-overload]


def repeat_records(project: Project) -> dict[int, tuple[int, int, int]]:
    """Per annotator id: (repeats judged with their original judgment, of which both chose a
    side, of which the repeat chose the other completion)."""
    original = Judgment.objects.filter(
        comparison_id=OuterRef("comparison__repeat_of_id"), annotator_id=OuterRef("annotator_id")
    ).values("choice")[:1]
    rows = (
        Judgment.objects.filter(
            project=project, comparison__kind=Comparison.Kind.REPEAT, annotator__isnull=False
        )
        .annotate(first=Subquery(original))
        .exclude(first__isnull=True)
        .values_list("annotator_id", "choice", "first")
    )
    records: dict[int, tuple[int, int, int]] = {}
    for annotator_id, choice, first in rows.iterator(chunk_size=5000):
        n, decisive, flips = records.get(annotator_id, (0, 0, 0))
        again = unswapped(choice)
        both_sides = first in _SIDES and again in _SIDES
        records[annotator_id] = (
            n + 1,
            decisive + both_sides,
            flips + (both_sides and again != first),
        )
    return records


def flip_figures(repeats: int, decisive: int, flips: int) -> dict[str, Any]:
    """The flip figures of one annotator or the team, as the quality API lists them."""
    return {
        "repeats": repeats,
        "flip_items": decisive,
        "flip_rate": flips / decisive if decisive else None,
        "flip_rate_ci95": wilson_interval(flips, decisive),
    }


def wilson_interval(k: int, n: int, z: float = _Z95) -> list[float] | None:
    """Wilson's score interval for k successes in n trials; None when n is 0."""
    if n == 0:
        return None
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]
