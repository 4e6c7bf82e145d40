"""The dataset card (README.md) that goes with an export, and the counts it reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from annotate.datasets.counting import REASONS, Counting
from annotate.models import Comparison, Completion, Judgment, Project

from .labels import PairOptions, chosen_judgments
from .versions import version_labels

_CONVERSATIONAL = (
    "`prompt`, `chosen`, `rejected` as lists of chat messages (TRL's conversational format)"
)
_COLUMNS = {
    "trl": _CONVERSATIONAL,
    "parquet": _CONVERSATIONAL,
    "trl-plain": "`prompt`, `chosen`, `rejected` as plain strings (TRL's standard format)",
    "csv": "`prompt`, `chosen`, `rejected` as text, `messages` as the prompt's chat in JSON",
    "judgments": "one row per judgment, annotators as pseudonymous ids",
}
_FINISHED = {
    "judgments": "`a_finished` and `b_finished`",
}
_PAIR_FINISHED = "`chosen_finished` and `rejected_finished`"


@dataclass
class ExportStats:
    """What an export wrote, for the dataset card and the job report."""

    rows: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    agreement_sum: float = 0.0
    multi_vote: int = 0
    annotators: set[str] = field(default_factory=set)

    def add_pair(self, pair: dict[str, Any]) -> None:
        self.rows += 1
        self.labels[pair["label"]] += 1
        if pair["votes_total"] > 1:
            self.multi_vote += 1
            self.agreement_sum += pair["agreement"]

    @property
    def mean_agreement(self) -> float | None:
        return self.agreement_sum / self.multi_vote if self.multi_vote else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labels": dict(self.labels),
            "mean_agreement": self.mean_agreement,
            "pairs_with_several_votes": self.multi_vote,
            "annotators": len(self.annotators),
        }


def _yaml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _round_samplers(project: Project, names: dict[int, str]) -> dict[int | None, str]:
    """Per round, " (sampled by v1)": the versions whose completions its train pairs compare."""
    pairs = (
        Comparison.objects.filter(project=project, kind=Comparison.Kind.TRAIN)
        .order_by()
        .values_list("round", "completion_a__model_version_id", "completion_b__model_version_id")
        .distinct()
    )
    by_round: dict[int | None, set[str]] = {}
    for number, a, b in pairs:
        by_round.setdefault(number, set()).update(names[v] for v in (a, b) if v in names)
    return {
        number: f" (sampled by {', '.join(sorted(labels))})"
        for number, labels in by_round.items()
        if labels
    }


_REASON_NAMES = {
    "paused": "paused annotators",
    "low_gold": "annotators below the gold-accuracy threshold",
    "fast": "fast judgments",
}


def _counting_section(rule: Counting, left_out: dict[str, int]) -> list[str]:
    """Which judgments counted: the rule applied and what it left out, by reason."""
    lines = ["", "## Which judgments count", ""]
    lines += [f"- {line.capitalize()}." for line in rule.describe()]
    lines.append("")
    total = sum(left_out.values())
    if not total:
        lines.append("No judgment of the selected pairs was left out.")
        return lines
    lines.append(
        f"{total} judgment{'s' if total != 1 else ''} of the selected pairs "
        f"{'were' if total != 1 else 'was'} left out:"
    )
    lines += [f"- {_REASON_NAMES[key]}: {left_out[key]}" for key in REASONS if key in left_out]
    return lines


def dataset_card(project: Project, fmt: str, options: PairOptions, stats: ExportStats) -> str:
    """Markdown describing an export: the project, what annotators saw, counts and options.

    ``stats`` are the numbers of the export it goes with.
    """
    # Hidden repeats (annotate.quality.repeats) are checks, never exported: not counted here.
    judgments = Judgment.objects.filter(project=project).exclude(
        comparison__kind=Comparison.Kind.REPEAT
    )
    by_source = dict(
        judgments.order_by()
        .values_list("source")
        .annotate(n=Count("pk"))
        .values_list("source", "n")
    )
    people = judgments.filter(annotator__isnull=False).values("annotator").distinct().count()
    comparisons = Comparison.objects.filter(project=project).exclude(kind=Comparison.Kind.REPEAT)
    rounds = list(
        comparisons.order_by("round")
        .values_list("round")
        .annotate(n=Count("pk"))
        .values_list("round", "n")
    )
    names = version_labels(project)
    versions = list(
        Completion.objects.filter(prompt__project=project, model_version_id__isnull=False)
        .order_by("model_version_id")
        .values_list("model_version_id")
        .annotate(n=Count("pk"))
        .values_list("model_version_id", "n")
    )
    samplers = _round_samplers(project, names)
    decisive = comparisons.filter(judgment_count__gt=0).aggregate(
        n=Count("pk"), multi=Count("pk", filter=Q(judgment_count__gt=1))
    )

    lines = ["---"]
    if project.license:
        lines.append(f"license: {_yaml_string(project.license)}")
    lines += [
        f"pretty_name: {_yaml_string(project.name)}",
        "tags:",
        "- preference",
        "- dpo",
        "---",
        "",
        f"# {project.name}",
        "",
        f"Human preference data exported from prefloop on {timezone.now():%Y-%m-%d %H:%M} UTC.",
        "",
        f"- **Format:** `{fmt}`: {_COLUMNS[fmt]}.",
        f"- **License:** {project.license or 'not set by the project lead'}.",
        f"- **Rows in this export:** {stats.rows}.",
        "",
        "## Counts",
        "",
        "| | |",
        "|---|---|",
        f"| Prompts | {project.prompts.count()} |",
        f"| Pairs | {comparisons.count()} ({decisive['n']} judged, "
        f"{decisive['multi']} by several annotators) |",
        f"| Judgments | {judgments.count()} |",
    ]
    for source, label in Judgment.Source.choices:
        lines.append(f"| … {label.lower()} | {by_source.get(source, 0)} |")
    lines.append(f"| Annotators (people) | {people} |")
    if stats.labels:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(stats.labels.items()))
        lines.append(f"| Outcomes exported | {labels} |")
    agreement = stats.mean_agreement
    lines += [
        "",
        "## Agreement",
        "",
        (
            f"Mean agreement (share of votes for the outcome) over the {stats.multi_vote} exported "
            f"pairs with more than one vote: {agreement:.3f}."
            if agreement is not None
            else "No exported pair has more than one vote, so agreement is not measured."
        ),
        "",
        "## Selection",
        "",
    ]
    opts = options.as_dict()
    for key in ("rounds", "splits", "versions"):
        value = opts[key]
        listed = ", ".join(str(v) for v in value)
        if key == "splits" and not value:
            listed = (
                "train; pairs on eval and dev prompts are left out (they measure versions and "
                "gate their promotion; ask for those splits to export them)"
            )
        lines.append(f"- `{key}`: {listed or 'all'}")
    kinds = opts["kinds"]
    lines.append(
        f"- `kinds`: {', '.join(kinds)}"
        if kinds
        else "- `kinds`: train and gold; eval comparisons are left out (they measure the "
        "model and are never trained on; ask for the eval kind to export them)"
    )
    for key in (
        "include_ties",
        "include_both_bad",
        "aggregation",
        "min_agreement",
        "min_votes",
        "label_smoothing",
    ):
        lines.append(f"- `{key}`: {opts[key]}")
    rule = options.counting(project)
    lines.append(f"- `weight`: {rule.weight}")
    lines += _counting_section(rule, rule.left_out(chosen_judgments(project, options)))
    finished = _FINISHED.get(fmt, _PAIR_FINISHED)
    lines += [
        "",
        "## Cut-off completions",
        "",
        f"{finished} say whether the model ended each completion itself (true) or was cut off by "
        "its token budget (false); empty when not known (imported data). Train a cut-off "
        "completion as a prefix, with no end-of-turn token after it, or leave its pair out: "
        "closing it as a finished reply teaches the model to stop mid-sentence.",
    ]
    lines += ["", "## Rounds", ""]
    if rounds:
        lines += [
            f"- {'no round' if r is None else f'round {r}'}: {n} pairs{samplers.get(r, '')}"
            for r, n in rounds
        ]
    else:
        lines.append("No pairs yet.")
    lines += ["", "## Model versions", ""]
    if versions:
        lines += [
            "Versions are named as in prefloop: `base` is the project's base model, `v<n>` the "
            "version trained from round n's judgments. Round n is sampled by the version serving "
            "when it starts (v(n-1) when every earlier version was promoted); the "
            "`chosen_model_version` and `rejected_model_version` columns name each completion's.",
            "",
        ]
        for version_id, n in versions:
            name = names.get(version_id, f"version id {version_id}") if version_id else "?"
            lines.append(f"- {name}: {n} completions")
    else:
        lines.append("All completions were imported; none came from a model version here.")
    lines += [
        "",
        "## Annotators",
        "",
        "Annotators are identified only by a salted hash per project; "
        "no names or emails are exported.",
        "",
        "## Instructions annotators saw",
        "",
        project.instructions.strip() or "_No instructions were written._",
        "",
    ]
    return "\n".join(lines)
