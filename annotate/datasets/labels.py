"""Which comparisons become preference pairs, with what label, weight and label smoothing.

This is the one place that turns judgments into training data: the exports and the
training app both call ``preference_pairs``. Votes from every source (human, imported,
simulated) count alike.

Selection: ``rounds``, ``splits``, ``kinds`` and ``versions`` pick comparisons (``versions``: those
with a completion sampled by one of the named versions, "base", "v1", ...). Eval comparisons measure
the model and must never be trained on, so an empty ``kinds`` means every kind except
"eval"; they come out only when a caller names the "eval" kind.

The label of one comparison's votes (a, b, tie, both_bad), the same under every policy:
- a side wins only with more votes than the other side and more than the tie and both-bad
  votes together (they say "neither is better", so they count against the majority: one
  A vote and two tie votes is a tie, not an A);
- otherwise the label is "both_bad" when both-bad votes outnumber each other choice, else
  "tie";
- "tie" and "both_bad" labels are dropped unless ``include_ties`` / ``include_both_bad``;
  kept, they come out with A as chosen and B as rejected and their ``label`` says which.

How strongly the votes back the label is ``agreement``, and there tie and both-bad votes
count by ``tie_votes``, a parameter rather than an export option (the training rounds pass
their ``ties`` setting, "drop" or "weak"):
- "outcome" (the exports): each choice counts for itself; agreement = votes for the most
  chosen choice / all votes (1.0 when everyone agrees);
- "drop": only A and B votes count: agreement = the larger side's share of them;
- "weak": each tie and both-bad vote counts half for A and half for B, which dilutes the
  winner's share without choosing a side: agreement = (winner + (tie + both_bad) / 2) / all.
A "tie" or "both_bad" label's agreement is the "outcome" one under every policy.

Then ``majority`` keeps every label, ``unanimous`` only agreement 1.0, ``min-agreement``
only agreement >= ``min_agreement``; ``min_votes`` drops pairs with fewer votes;
weight = agreement when ``weight`` is "agreement", the voters' gold accuracy when it is
"gold_accuracy", else 1.0.

Which judgments count at all is the project's counting rule (``annotate.datasets.counting``:
paused annotators, a gold-accuracy threshold, fast judgments, and the default ``weight``):
votes are tallied over the counted judgments only, so a comparison whose every judgment is
left out gives no pair. ``skip_paused``, ``min_gold_accuracy``, ``skip_fast`` and ``weight``
override the project's setting when given (None or "": the project's).

``label_smoothing`` is the minority's vote share, the chance that the label is wrong in
conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"): the loser's votes
plus half of the tie and both-bad votes, over all votes ("outcome" and "weak"), or the loser's
share of the A and B votes ("drop"). It lies in [0, 0.5); a "tie" or "both_bad" label has 0.5.
Worked examples, as (a, b, tie, both_bad) -> label, agreement by outcome / drop / weak,
label smoothing by outcome / drop / weak:
- (3, 0, 0, 0) -> a, 1 / 1 / 1, 0 / 0 / 0;
- (1, 0, 2, 0) -> tie (A does not beat the two tie votes);
- (2, 1, 0, 0) -> a, 2/3 / 2/3 / 2/3, 1/3 / 1/3 / 1/3;
- (2, 0, 1, 0) -> a, 2/3 / 1 / 5/6, 1/6 / 0 / 1/6;
- (2, 0, 1, 1) -> tie (two A votes against two that prefer neither side).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from django.db.models import Count, IntegerField, Model, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from annotate.datasets import counting
from annotate.datasets.counting import Counting
from annotate.errors import InvalidInput
from annotate.models import Comparison, Judgment, Project, Prompt

from .formats import MAX_ROUND
from .versions import version_ids, version_label, version_number

AGGREGATIONS = ("majority", "unanimous", "min-agreement")
WEIGHTS = counting.WEIGHTS
CHOICES = tuple(Judgment.Choice.values)
TIE_VOTES = ("outcome", "drop", "weak")
CHUNK = 2000

_Row = TypeVar("_Row", bound=Model)


@dataclass
class PairOptions:
    rounds: list[int] = field(default_factory=list)  # empty: every round (and none)
    # empty: the train split; the held-out splits (eval, dev) measure versions and gate their
    # promotion, so pairs on their prompts leave only when named, like eval comparisons
    splits: list[str] = field(default_factory=list)
    # empty: every comparison kind but "eval" (eval comparisons are never trained on, so they
    # leave only when named)
    kinds: list[str] = field(default_factory=list)
    include_ties: bool = False
    include_both_bad: bool = False
    aggregation: str = "majority"
    min_agreement: float = 0.0  # used by aggregation "min-agreement"
    min_votes: int = 1
    weight: str = ""  # "": the project's count_weight
    # exports: add each pair's ``label_smoothing`` column (soft labels for conservative DPO)
    label_smoothing: bool = False
    # empty: completions of any version (and imported ones); else comparisons with a completion
    # sampled by one of these versions ("base", "v1", ...; "v0" is read as "base")
    versions: list[str] = field(default_factory=list)
    # The counting rule (annotate.datasets.counting); None: the project's setting
    skip_paused: bool | None = None
    min_gold_accuracy: float | None = None
    skip_fast: bool | None = None

    def __post_init__(self) -> None:
        self.versions = [version_label(version_number(v)) for v in self.versions]
        bad_splits = set(self.splits) - set(Prompt.Split.values)
        if bad_splits:
            raise InvalidInput(f'"splits" must be among {", ".join(Prompt.Split.values)}')
        bad_kinds = set(self.kinds) - set(Comparison.PAIR_KINDS)
        if bad_kinds:
            raise InvalidInput(f'"kinds" must be among {", ".join(Comparison.PAIR_KINDS)}')
        if self.aggregation not in AGGREGATIONS:
            raise InvalidInput(f'"aggregation" must be one of {", ".join(AGGREGATIONS)}')
        if self.weight and self.weight not in WEIGHTS:
            raise InvalidInput(f'"weight" must be one of {", ".join(WEIGHTS)}')
        if not 0.0 <= self.min_agreement <= 1.0:
            raise InvalidInput('"min_agreement" must be between 0 and 1')
        if self.min_votes < 1:
            raise InvalidInput('"min_votes" must be at least 1')
        if self.min_gold_accuracy is not None and not 0.0 <= self.min_gold_accuracy <= 1.0:
            raise InvalidInput('"min_gold_accuracy" must be between 0 and 1')

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairOptions:
        """Options from query parameters, form fields or JSON (lists or comma-separated)."""

        def items(name: str) -> list[str]:
            raw = data.get(name)
            if raw in (None, ""):
                return []
            values = raw if isinstance(raw, list | tuple) else str(raw).split(",")
            return [str(v).strip() for v in values if str(v).strip()]

        def flag(name: str) -> bool:
            return bool(choice(name))

        def choice(name: str) -> bool | None:
            """A flag that may be left to the project: missing or "" -> None."""
            raw = data.get(name)
            if raw is None or isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text == "":
                return None
            if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise InvalidInput(f'"{name}" must be true or false')
            return text in ("1", "true", "yes", "on")

        def number(name: str, kind: type, default: Any) -> Any:
            raw = data.get(name)
            if raw in (None, ""):
                return default
            try:
                return kind(raw)
            except (TypeError, ValueError):
                raise InvalidInput(f'"{name}" must be a number') from None

        try:
            rounds = [int(r) for r in items("rounds")]
        except ValueError:
            raise InvalidInput('"rounds" must be whole numbers') from None
        if any(not 0 <= r <= MAX_ROUND for r in rounds):
            raise InvalidInput(f'"rounds" must lie between 0 and {MAX_ROUND}')
        return cls(
            rounds=rounds,
            splits=items("splits"),
            kinds=items("kinds"),
            include_ties=flag("include_ties"),
            include_both_bad=flag("include_both_bad"),
            aggregation=str(data.get("aggregation") or "majority"),
            min_agreement=number("min_agreement", float, 0.0),
            min_votes=number("min_votes", int, 1),
            weight=str(data.get("weight") or ""),
            label_smoothing=flag("label_smoothing"),
            versions=items("versions"),
            skip_paused=choice("skip_paused"),
            min_gold_accuracy=number("min_gold_accuracy", float, None),
            skip_fast=choice("skip_fast"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def counting(self, project: Project) -> Counting:
        """The project's counting rule with these options' overrides."""
        return counting.resolve(
            project,
            skip_paused=self.skip_paused,
            min_gold_accuracy=self.min_gold_accuracy,
            skip_fast=self.skip_fast,
            weight=self.weight,
        )

    def select(self, rows: QuerySet[_Row], via: str = "") -> QuerySet[_Row]:
        """The rows whose comparison is in the chosen rounds, prompt splits and kinds.

        ``via`` is the lookup from the rows to their comparison: "" for comparisons,
        "comparison__" for judgments.
        """
        if self.rounds:
            rows = rows.filter(**{f"{via}round__in": self.rounds})
        if self.splits:
            rows = rows.filter(**{f"{via}prompt__split__in": self.splits})
        else:
            rows = rows.filter(**{f"{via}prompt__split": Prompt.Split.TRAIN})
        if self.kinds:
            rows = rows.filter(**{f"{via}kind__in": self.kinds})
        else:
            rows = rows.exclude(**{f"{via}kind": Comparison.Kind.EVAL})
        # Hidden repeats (annotate.quality.repeats) are checks: never a pair, never exported.
        return rows.exclude(**{f"{via}kind": Comparison.Kind.REPEAT})


@dataclass(frozen=True)
class Tally:
    """One comparison's votes, and the label, agreement and label smoothing they give."""

    a: int = 0
    b: int = 0
    tie: int = 0
    both_bad: int = 0
    tie_votes: str = "outcome"  # one of TIE_VOTES

    @property
    def total(self) -> int:
        return self.a + self.b + self.tie + self.both_bad

    @property
    def neither(self) -> int:
        """Votes that prefer neither side."""
        return self.tie + self.both_bad

    @property
    def outcome(self) -> str:
        """The label: "a", "b", "tie" or "both_bad" (the same under every ``tie_votes``)."""
        if self.a > self.b and self.a > self.neither:
            return "a"
        if self.b > self.a and self.b > self.neither:
            return "b"
        if self.both_bad > max(self.a, self.b, self.tie):
            return "both_bad"
        return "tie"

    @property
    def agreement(self) -> float:
        """How strongly the votes back the label, with tie votes counted by ``tie_votes``."""
        if self.tie_votes == "outcome" or self.outcome not in ("a", "b"):
            top = max(self.a, self.b, self.tie, self.both_bad)
            return top / self.total if self.total else 0.0
        if self.tie_votes == "drop":
            return max(self.a, self.b) / (self.a + self.b)
        return (max(self.a, self.b) + self.neither / 2) / self.total

    @property
    def label_smoothing(self) -> float:
        """The minority's vote share: the chance that the label is wrong (conservative DPO)."""
        outcome = self.outcome
        if outcome not in ("a", "b"):
            return 0.5
        loser = self.b if outcome == "a" else self.a
        if self.tie_votes == "drop":
            return loser / (self.a + self.b)
        return (loser + self.neither / 2) / self.total


def keeps(tally: Tally, options: PairOptions) -> bool:
    if tally.total < options.min_votes:
        return False
    outcome = tally.outcome
    if outcome == "tie" and not options.include_ties:
        return False
    if outcome == "both_bad" and not options.include_both_bad:
        return False
    if options.aggregation == "unanimous":
        return tally.agreement == 1.0
    if options.aggregation == "min-agreement":
        return tally.agreement >= options.min_agreement
    return True


def _votes(choice: str, rule: Counting) -> Coalesce:
    counted = (
        rule.counted(Judgment.objects.filter(comparison=OuterRef("pk"), choice=choice))
        .order_by()
        .values("comparison")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def _filtered(
    comparisons: QuerySet[Comparison], options: PairOptions, rule: Counting
) -> QuerySet[Comparison]:
    return (
        options.select(comparisons)
        .annotate(**{f"votes_{choice}": _votes(choice, rule) for choice in CHOICES})
        .select_related("prompt", "completion_a", "completion_b")
        .order_by("pk")
    )


def _by_versions(
    rows: QuerySet[_Row], project: Project, options: PairOptions, via: str = ""
) -> QuerySet[_Row]:
    """The rows whose comparison has a completion by one of ``options.versions`` (all if none)."""
    if not options.versions:
        return rows
    ids = version_ids(project, options.versions)
    return rows.filter(
        Q(**{f"{via}completion_a__model_version_id__in": ids})
        | Q(**{f"{via}completion_b__model_version_id__in": ids})
    )


def selected_comparisons(
    project: Project, options: PairOptions, rule: Counting | None = None
) -> QuerySet[Comparison]:
    """The comparisons the options select, each with its counted votes counted in SQL.

    Raises:
        InvalidInput: ``options.versions`` names a version the project does not have.
    """
    rule = rule or options.counting(project)
    comparisons = Comparison.objects.filter(project=project, judgment_count__gt=0)
    return _filtered(_by_versions(comparisons, project, options), options, rule)


def chosen_judgments(project: Project, options: PairOptions) -> QuerySet[Judgment]:
    """The judgments on the comparisons the options select, before the counting rule."""
    judgments = options.select(Judgment.objects.filter(project=project), via="comparison__")
    return _by_versions(judgments, project, options, via="comparison__")


def selected_judgments(project: Project, options: PairOptions) -> QuerySet[Judgment]:
    """The counted judgments on the comparisons the options select (exports of judgments)."""
    return options.counting(project).counted(chosen_judgments(project, options))


def preference_pairs(
    project: Project, options: PairOptions | None = None, *, tie_votes: str = "outcome"
) -> Iterator[dict[str, Any]]:
    """One dict per selected comparison, streamed in id order in constant memory.

    Keys: comparison_id, prompt_id, prompt (messages), chosen, rejected (texts), label
    ("a", "b", "tie" or "both_bad"), round, kind, split, votes_chosen, votes_rejected,
    votes_tie, votes_both_bad, votes_total, agreement, weight, label_smoothing,
    chosen_model_version_id, rejected_model_version_id (the training app's version ids, None
    for imported completions), chosen_generation_params,
    rejected_generation_params, chosen_finished, rejected_finished (None when unknown),
    chosen_token_ids, rejected_token_ids (the sampled ids, or None).
    """
    options = options or PairOptions()
    _check_tie_votes(tie_votes)
    rule = options.counting(project)
    return _pairs(selected_comparisons(project, options, rule), options, tie_votes, rule)


def comparison_pairs(
    comparisons: QuerySet[Comparison],
    options: PairOptions | None = None,
    *,
    tie_votes: str = "outcome",
) -> Iterator[dict[str, Any]]:
    """``preference_pairs`` over the given comparisons instead of a whole project's.

    ``options.versions`` must be empty: version names belong to one project, and so must the
    comparisons, whose project's counting rule applies.
    """
    options = options or PairOptions()
    if options.versions:
        raise InvalidInput('"versions" selects within one project: use preference_pairs')
    _check_tie_votes(tie_votes)
    project_ids = list(comparisons.order_by().values_list("project_id", flat=True).distinct()[:2])
    if len(project_ids) > 1:
        raise InvalidInput("comparison_pairs takes the comparisons of one project")
    if not project_ids:
        return iter(())
    rule = options.counting(Project.objects.get(pk=project_ids[0]))
    return _pairs(_filtered(comparisons, options, rule), options, tie_votes, rule)


def _check_tie_votes(tie_votes: str) -> None:
    if tie_votes not in TIE_VOTES:
        raise InvalidInput(f'"tie_votes" must be one of {", ".join(TIE_VOTES)}')


def _pairs(
    comparisons: QuerySet[Comparison], options: PairOptions, tie_votes: str, rule: Counting
) -> Iterator[dict[str, Any]]:
    for comparison, voters in rule.with_voters(comparisons.iterator(chunk_size=CHUNK), CHUNK):
        tally = Tally(
            a=comparison.votes_a,  # type: ignore[attr-defined]
            b=comparison.votes_b,  # type: ignore[attr-defined]
            tie=comparison.votes_tie,  # type: ignore[attr-defined]
            both_bad=comparison.votes_both_bad,  # type: ignore[attr-defined]
            tie_votes=tie_votes,
        )
        if not keeps(tally, options):
            continue
        label = tally.outcome
        chosen, rejected = comparison.completion_a, comparison.completion_b
        votes_chosen, votes_rejected = tally.a, tally.b
        if label == "b":
            chosen, rejected = rejected, chosen
            votes_chosen, votes_rejected = votes_rejected, votes_chosen
        yield {
            "comparison_id": comparison.pk,
            "prompt_id": comparison.prompt_id,
            "prompt": comparison.prompt.messages,
            "chosen": chosen.text,
            "rejected": rejected.text,
            "label": label,
            "round": comparison.round,
            "kind": comparison.kind,
            "split": comparison.prompt.split,
            "votes_chosen": votes_chosen,
            "votes_rejected": votes_rejected,
            "votes_tie": tally.tie,
            "votes_both_bad": tally.both_bad,
            "votes_total": tally.total,
            "agreement": tally.agreement,
            "weight": rule.pair_weight(tally.agreement, tally.outcome, voters),
            "label_smoothing": tally.label_smoothing,
            "chosen_model_version_id": chosen.model_version_id,
            "rejected_model_version_id": rejected.model_version_id,
            "chosen_generation_params": chosen.generation_params,
            "rejected_generation_params": rejected.generation_params,
            "chosen_finished": chosen.finished,
            "rejected_finished": rejected.finished,
            "chosen_token_ids": chosen.token_ids,
            "rejected_token_ids": rejected.token_ids,
        }
