"""Which judgments count towards preference pairs, and how much each pair weighs.

A project's counting rule (its ``count_*`` settings, which export options may override) leaves
out, in this order of reasons:

- "paused": every judgment of an annotator who is paused in the project now;
- "low_gold": every judgment of an annotator whose gold accuracy is below
  ``count_min_gold_accuracy`` after at least ``gold_min_items`` gold pairs judged (0 keeps
  everyone);
- "fast": judgments made faster than ``fast_judgment_seconds``, timed as the quality figures
  time them (``duration_ms``, else the time from the lease to the judgment).

Paused, gold and speed rules apply to judgments made here; imported judgments (no annotator)
always count. A judgment with several reasons is left out under the first.

The pair weight is "uniform" (1), "agreement" (the share of the votes behind the label) or
"gold_accuracy": the mean gold accuracy of the annotators whose counted votes gave the label,
over those with an established accuracy (``gold_min_items`` gold pairs judged); 1.0 when no
voter of the label has one.

``annotate.datasets.labels`` is the only caller that turns judgments into pairs: exports and
training both go through it, so they count the same judgments.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    Count,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)

from annotate.models import Assignment, Comparison, Judgment, Membership, Project

REASONS = {
    "paused": "the annotator is paused",
    "low_gold": "the annotator's gold accuracy is below the threshold",
    "fast": "made faster than the fast-judgment floor",
}
WEIGHTS = tuple(Project.PairWeight.values)  # uniform, agreement, gold_accuracy
# The project settings a rule reads (a cache of counted figures keys on them).
COUNTING_FIELDS = (
    "count_skip_paused",
    "count_min_gold_accuracy",
    "count_skip_fast",
    "count_weight",
    "fast_judgment_seconds",
    "gold_min_items",
)


def lease_started() -> Subquery:
    """When the judgment's pair was leased to its annotator (a subquery on judgments)."""
    return Subquery(
        Assignment.objects.filter(
            comparison=OuterRef("comparison_id"), annotator=OuterRef("annotator_id")
        ).values("leased_at")[:1]
    )


def judgment_seconds(duration_ms: int | None, shown_at: Any, made_at: Any) -> float | None:
    """How long a judgment took: ``duration_ms``, else lease to judgment (never negative)."""
    if duration_ms is not None:
        return duration_ms / 1000
    if shown_at is None or made_at is None:
        return None
    return max(0.0, (made_at - shown_at).total_seconds())


def fast_condition(floor: float) -> Q:
    """``judgment_seconds < floor`` in SQL, on judgments annotated with ``shown_at``."""
    if floor <= 0:
        return Q(pk__in=[])
    timed = Q(duration_ms__lt=floor * 1000) | Q(
        duration_ms__isnull=True,
        shown_at__isnull=False,
        created_at__lt=F("shown_at") + timedelta(seconds=floor),
    )
    return Q(annotator__isnull=False) & timed


@dataclass(frozen=True)
class Counting:
    """A counting rule resolved for one project: who and what it leaves out, and the weight."""

    skip_paused: bool = False
    min_gold_accuracy: float = 0.0
    skip_fast: bool = False
    weight: str = "uniform"
    fast_seconds: float = 2.0
    gold_min_items: int = 10
    paused: frozenset[int] = frozenset()  # annotator ids left out as paused
    low_gold: frozenset[int] = frozenset()  # annotator ids left out for their gold accuracy
    accuracy: dict[int, float] = field(default_factory=dict)  # established gold accuracies

    @property
    def filters(self) -> bool:
        """Whether the rule can leave out any judgment."""
        return bool(self.paused or self.low_gold or (self.skip_fast and self.fast_seconds > 0))

    def counted(self, judgments: QuerySet[Judgment]) -> QuerySet[Judgment]:
        """The judgments the rule keeps."""
        people = self.paused | self.low_gold
        if people:
            judgments = judgments.exclude(annotator_id__in=sorted(people))
        if self.skip_fast and self.fast_seconds > 0:
            judgments = judgments.annotate(
                shown_at=lease_started(),
                is_fast=Case(
                    When(fast_condition(self.fast_seconds), then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                ),
            ).filter(is_fast=False)
        return judgments

    def left_out(self, judgments: QuerySet[Judgment]) -> dict[str, int]:
        """How many of ``judgments`` the rule leaves out, by reason (REASONS order)."""
        whens = []
        if self.paused:
            whens.append(When(annotator_id__in=sorted(self.paused), then=Value("paused")))
        if self.low_gold:
            whens.append(When(annotator_id__in=sorted(self.low_gold), then=Value("low_gold")))
        if self.skip_fast and self.fast_seconds > 0:
            judgments = judgments.annotate(shown_at=lease_started())
            whens.append(When(fast_condition(self.fast_seconds), then=Value("fast")))
        if not whens:
            return {}
        rows = (
            judgments.annotate(reason=Case(*whens, default=Value("")))
            .exclude(reason="")
            .order_by()
            .values_list("reason")
            .annotate(n=Count("pk"))
        )
        found = dict(rows)
        return {key: found[key] for key in REASONS if found.get(key)}

    def voters(self, judgments: QuerySet[Judgment]) -> dict[int, dict[str, list[int | None]]]:
        """Per comparison id, per choice, the annotator ids of the counted ``judgments``."""
        found: dict[int, dict[str, list[int | None]]] = defaultdict(lambda: defaultdict(list))
        rows = self.counted(judgments).values_list("comparison_id", "choice", "annotator_id")
        for comparison_id, choice, annotator_id in rows:
            found[comparison_id][choice].append(annotator_id)
        return found

    def with_voters(
        self, comparisons: Iterator[Comparison], chunk: int
    ) -> Iterator[tuple[Comparison, dict[str, list[int | None]]]]:
        """Each comparison with its counted voters by choice, fetched by chunk when the weight
        needs them (else with none)."""
        if self.weight != "gold_accuracy":
            for comparison in comparisons:
                yield comparison, {}
            return
        for rows in iter(lambda: list(islice(comparisons, chunk)), []):
            voters = self.voters(Judgment.objects.filter(comparison_id__in=[c.pk for c in rows]))
            for comparison in rows:
                yield comparison, voters.get(comparison.pk, {})

    def pair_weight(
        self, agreement: float, label: str, voters: dict[str, list[int | None]]
    ) -> float:
        """The weight of a pair with this agreement and label, given its voters by choice."""
        if self.weight == "agreement":
            return agreement
        if self.weight == "gold_accuracy":
            return self.gold_weight(voters.get(label, []))
        return 1.0

    def gold_weight(self, voters: list[int | None]) -> float:
        """Mean established gold accuracy of a label's voters; 1.0 when none has one."""
        known = [self.accuracy[a] for a in voters if a is not None and a in self.accuracy]
        return sum(known) / len(known) if known else 1.0

    def describe(self) -> list[str]:
        """The rule as sentences, for the dataset card."""
        lines = [
            "judgments of paused annotators are left out"
            if self.skip_paused
            else "judgments of paused annotators count",
            f"annotators below {self.min_gold_accuracy:.0%} gold accuracy (after "
            f"{self.gold_min_items} gold pairs) are left out"
            if self.min_gold_accuracy > 0
            else "no gold-accuracy threshold",
            f"judgments faster than {self.fast_seconds:g} s are left out"
            if self.skip_fast
            else "fast judgments count",
        ]
        weights = {
            "uniform": "every pair weighs 1",
            "agreement": "pairs are weighted by agreement",
            "gold_accuracy": "pairs are weighted by their voters' gold accuracy",
        }
        return [*lines, weights[self.weight]]


def gold_accuracies(project: Project) -> dict[int, tuple[int, int]]:
    """Per annotator id: (right answers, gold pairs judged), as the quality figures count them."""
    rows = (
        Judgment.objects.filter(project=project, annotator__isnull=False)
        .exclude(comparison__gold_choice="")
        .order_by()
        .values_list("annotator_id")
        .annotate(
            right=Count("pk", filter=Q(choice=F("comparison__gold_choice"))),
            n=Count("pk"),
        )
    )
    return {annotator_id: (right, n) for annotator_id, right, n in rows}


def resolve(
    project: Project,
    *,
    skip_paused: bool | None = None,
    min_gold_accuracy: float | None = None,
    skip_fast: bool | None = None,
    weight: str = "",
) -> Counting:
    """The project's counting rule, each setting overridden where given (None, "": keep)."""
    skip_paused = project.count_skip_paused if skip_paused is None else skip_paused
    threshold = project.count_min_gold_accuracy if min_gold_accuracy is None else min_gold_accuracy
    skip_fast = project.count_skip_fast if skip_fast is None else skip_fast
    weight = weight or project.count_weight
    accuracy: dict[int, float] = {}
    if threshold > 0 or weight == "gold_accuracy":
        accuracy = {
            annotator_id: right / n
            for annotator_id, (right, n) in gold_accuracies(project).items()
            if n >= project.gold_min_items
        }
    paused: frozenset[int] = frozenset()
    if skip_paused:
        paused = frozenset(
            Membership.objects.filter(project=project, paused=True).values_list(
                "user_id", flat=True
            )
        )
    low = frozenset(a for a, rate in accuracy.items() if rate < threshold) if threshold > 0 else ()
    return Counting(
        skip_paused=skip_paused,
        min_gold_accuracy=threshold,
        skip_fast=skip_fast,
        weight=weight,
        fast_seconds=project.fast_judgment_seconds,
        gold_min_items=project.gold_min_items,
        paused=paused,
        low_gold=frozenset(low) - paused,
        accuracy=accuracy,
    )
