"""A project's quality figures, computed from its judgments in one pass.

Annotators are keyed here as the exports key them ("user:<id>", "external:<name>"); turning
keys into usernames or pseudonyms, and adding the live pause state, is ``report``'s job, so
these figures can be cached whatever the reader asks to see.

Categories are what the annotator meant ("a", "b", "tie", "both_bad", on the completions),
never the side shown. Position bias is the exception: it is about the side shown, so it reads
"left"/"right" through :func:`annotate.models.choice_as_shown`.

A hidden repeat's judgment counts in its annotator's figures like any other judgment; only its
annotator judges it, so it never enters agreement. Self-consistency (``flip_rate``) compares it
with the same annotator's judgment of the original pair (``annotate.quality.repeats``).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from django.db.models.functions import Length

from annotate.datasets.counting import judgment_seconds, lease_started
from annotate.models import Comparison, Judgment, Project, choice_as_shown

from . import repeats, stats

CATEGORIES = tuple(Judgment.Choice.values)  # a, b, tie, both_bad
# Cohen's kappa is listed for pairs of annotators with at least this many shared items.
COHEN_MIN_SHARED = 10
# Bootstrap replicates for all the pairs' Cohen intervals together (each pair gets between 100
# and stats.BOOTSTRAP_REPLICATES): a team of 20 has 190 pairs, each a bootstrap of its own.
COHEN_REPLICATE_BUDGET = 20_000
_AB = (Judgment.Choice.A, Judgment.Choice.B)


def annotator_key(annotator_id: int | None, external: str) -> str:
    return f"user:{annotator_id}" if annotator_id is not None else f"external:{external}"


@dataclass
class _Annotator:
    judgments: int = 0
    left: int = 0
    right: int = 0
    longer_wins: int = 0
    longer_items: int = 0
    team_longer_wins: int = 0
    team_longer_items: int = 0
    seconds: list[float] = field(default_factory=list)
    fast: int = 0
    gold_items: int = 0
    gold_correct: int = 0
    # Hidden repeats judged, those where both judgments chose a side, and the flips among them.
    repeats: int = 0
    repeat_decisive: int = 0
    flips: int = 0


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _with_ci(
    name: str, profiles: Counter, statistic: Any, replicates: int = stats.BOOTSTRAP_REPLICATES
) -> dict[str, Any]:
    ci = stats.bootstrap_ci(profiles, statistic, replicates=replicates)
    return {name: statistic(profiles), f"{name}_ci95": ci}


def _rows(project: Project) -> Any:
    return (
        Judgment.objects.filter(project=project)
        .annotate(shown_at=lease_started())
        .order_by("pk")
        .values_list(
            "comparison_id",
            "annotator_id",
            "external_annotator",
            "choice",
            "left_is_a",
            "duration_ms",
            "shown_at",
            "created_at",
        )
        .iterator(chunk_size=5000)
    )


def _comparison_facts(project: Project) -> tuple[dict[int, str | None], dict[int, str]]:
    """Per comparison: which completion is longer by characters ("a", "b" or None for equal
    lengths), and the gold answer where there is one."""
    longer: dict[int, str | None] = {}
    gold: dict[int, str] = {}
    rows = (
        Comparison.objects.filter(project=project)
        .annotate(len_a=Length("completion_a__text"), len_b=Length("completion_b__text"))
        .values_list("pk", "len_a", "len_b", "gold_choice")
        .iterator(chunk_size=5000)
    )
    for pk, len_a, len_b, gold_choice in rows:
        longer[pk] = "a" if len_a > len_b else "b" if len_b > len_a else None
        if gold_choice:
            gold[pk] = gold_choice
    return longer, gold


def compute(project: Project) -> dict[str, Any]:
    """Every quality figure of the project (see the quality API's schema for the keys)."""
    floor = project.fast_judgment_seconds
    longer, gold = _comparison_facts(project)
    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    people: dict[str, _Annotator] = defaultdict(_Annotator)
    total = 0
    for comparison_id, annotator_id, external, choice, left_is_a, ms, shown_at, made_at in _rows(
        project
    ):
        total += 1
        key = annotator_key(annotator_id, external)
        by_item[comparison_id][key] = choice
        if annotator_id is None:
            # Imported judgments count towards agreement only: nobody saw them here.
            continue
        person = people[key]
        person.judgments += 1
        shown = choice_as_shown(choice, left_is_a)
        if shown == "left":
            person.left += 1
        elif shown == "right":
            person.right += 1
        seconds = judgment_seconds(ms, shown_at, made_at)
        if seconds is not None:
            person.seconds.append(seconds)
            if seconds < floor:
                person.fast += 1
        if comparison_id in gold:
            person.gold_items += 1
            person.gold_correct += choice == gold[comparison_id]
    _length_bias(by_item, longer, people)
    for annotator_id, record in repeats.repeat_records(project).items():
        person = people[annotator_key(annotator_id, "")]
        person.repeats, person.repeat_decisive, person.flips = record
    return {
        "judgments": total,
        "agreement": _agreement(by_item),
        "project": _project_figures(people, floor),
        "annotators": {key: _annotator_figures(p) for key, p in sorted(people.items())},
    }


def _length_bias(
    by_item: dict[int, dict[str, str]], longer: dict[int, str | None], people: dict[str, _Annotator]
) -> None:
    """How often each annotator picks the longer completion, and how often the rest of the team
    does on the same pairs; only A/B choices on pairs of unequal length count."""
    for comparison_id, votes in by_item.items():
        side = longer.get(comparison_id)
        if side is None:
            continue
        decisive = {k: c for k, c in votes.items() if c in _AB}
        n = len(decisive)
        wins = sum(c == side for c in decisive.values())
        for key, choice in decisive.items():
            if key not in people:
                continue
            person = people[key]
            won = choice == side
            person.longer_items += 1
            person.longer_wins += won
            person.team_longer_items += n - 1
            person.team_longer_wins += wins - won


def _agreement(by_item: dict[int, dict[str, str]]) -> dict[str, Any]:
    multi = [list(votes.values()) for votes in by_item.values() if len(votes) >= 2]
    profiles = stats.count_profiles(multi, CATEGORIES)
    shared: dict[tuple[str, str], Counter[tuple[str, str]]] = defaultdict(Counter)
    for votes in by_item.values():
        if len(votes) < 2:
            continue
        for a, b in combinations(sorted(votes), 2):
            shared[(a, b)][(votes[a], votes[b])] += 1
    listed = {pair: t for pair, t in shared.items() if sum(t.values()) >= COHEN_MIN_SHARED}
    replicates = cohen_replicates(len(listed))
    cohen = []
    for pair, table in sorted(listed.items()):
        cohen.append(
            {
                "annotators": list(pair),
                "items": sum(table.values()),
                **_with_ci("kappa", table, stats.cohen_kappa, replicates),
            }
        )
    return {
        "items": stats.n_items(profiles),
        **_with_ci("percent", profiles, stats.percent_agreement),
        **_with_ci("fleiss_kappa", profiles, stats.fleiss_kappa),
        **_with_ci("krippendorff_alpha", profiles, stats.krippendorff_alpha_nominal),
        "cohen_kappa": cohen,
        "bootstrap": {
            "replicates": stats.BOOTSTRAP_REPLICATES,
            "cohen_replicates": replicates,
            "seed": stats.BOOTSTRAP_SEED,
        },
    }


def cohen_replicates(pairs: int) -> int:
    """Replicates per pair's Cohen interval: the budget shared out, 100 at least."""
    if pairs == 0:
        return stats.BOOTSTRAP_REPLICATES
    return max(100, min(stats.BOOTSTRAP_REPLICATES, COHEN_REPLICATE_BUDGET // pairs))


def _project_figures(people: dict[str, _Annotator], floor: float) -> dict[str, Any]:
    left = sum(p.left for p in people.values())
    right = sum(p.right for p in people.values())
    seconds = [s for p in people.values() for s in p.seconds]
    longer_items = sum(p.longer_items for p in people.values())
    longer_wins = sum(p.longer_wins for p in people.values())
    gold_items = sum(p.gold_items for p in people.values())
    return {
        "left": left,
        "right": right,
        "left_rate": _rate(left, left + right),
        "left_p_value": stats.binomial_test(left, left + right),
        "longer_items": longer_items,
        "longer_win_rate": _rate(longer_wins, longer_items),
        "median_seconds": statistics.median(seconds) if seconds else None,
        "fast_judgments": sum(p.fast for p in people.values()),
        "fast_floor_seconds": floor,
        "gold_items": gold_items,
        "gold_accuracy": _rate(sum(p.gold_correct for p in people.values()), gold_items),
        **repeats.flip_figures(
            sum(p.repeats for p in people.values()),
            sum(p.repeat_decisive for p in people.values()),
            sum(p.flips for p in people.values()),
        ),
    }


def _annotator_figures(p: _Annotator) -> dict[str, Any]:
    return {
        "judgments": p.judgments,
        "left": p.left,
        "right": p.right,
        "left_rate": _rate(p.left, p.left + p.right),
        "left_p_value": stats.binomial_test(p.left, p.left + p.right),
        "longer_items": p.longer_items,
        "longer_win_rate": _rate(p.longer_wins, p.longer_items),
        "team_longer_items": p.team_longer_items,
        "team_longer_win_rate": _rate(p.team_longer_wins, p.team_longer_items),
        "median_seconds": statistics.median(p.seconds) if p.seconds else None,
        "fast_judgments": p.fast,
        "gold_items": p.gold_items,
        "gold_accuracy": _rate(p.gold_correct, p.gold_items),
        **repeats.flip_figures(p.repeats, p.repeat_decisive, p.flips),
    }
