"""The leaderboard: Bradley-Terry ratings of a project's versions from people's judgments of
the rounds' eval comparisons, on the Elo scale with bootstrap intervals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from annotate.models import Comparison, Judgment, Project

from ..core.stats import Game, bootstrap_bradley_terry
from ..models import ModelVersion


@dataclass
class LeaderboardEntry:
    version: str
    number: int
    rating: float
    low: float
    high: float
    comparisons: int  # judged eval comparisons the version took part in

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rating": round(self.rating, 1),
            "ci95": [round(self.low, 1), round(self.high, 1)],
            "comparisons": self.comparisons,
        }


# The first side's score per choice; "both bad" is no preference, like a tie.
_CHOICE_SCORES: dict[str, float] = {
    Judgment.Choice.A.value: 1.0,
    Judgment.Choice.B.value: 0.0,
    Judgment.Choice.TIE.value: 0.5,
    Judgment.Choice.BOTH_BAD.value: 0.5,
}


def leaderboard(project: Project) -> list[LeaderboardEntry]:
    """Bradley-Terry ratings of the project's versions from people's eval judgments.

    Every judgment of an eval comparison between two versions is one game (a tie or "both bad"
    counts half to each side); simulated annotators' judgments are left out. Ratings are on
    the Elo scale with the base at 1000 (`training.core.stats.bootstrap_bradley_terry`), and
    the 95% intervals resample the eval prompts. Versions without a judged eval comparison are
    not listed.
    """
    versions = {v.pk: v for v in ModelVersion.objects.filter(project=project)}
    rows = (
        Judgment.objects.filter(project=project, comparison__kind=Comparison.Kind.EVAL)
        .exclude(source=Judgment.Source.SIMULATED)
        .values_list(
            "comparison_id",
            "comparison__prompt_id",
            "choice",
            "comparison__completion_a__model_version_id",
            "comparison__completion_b__model_version_id",
        )
        .order_by("pk")
    )
    games: list[Game] = []
    seen: dict[int, set[int]] = {}
    for comparison_id, prompt_id, choice, a_id, b_id in rows:
        a = versions.get(a_id) if a_id is not None else None
        b = versions.get(b_id) if b_id is not None else None
        if a is None or b is None or a.pk == b.pk:
            continue
        games.append(Game(a.label, b.label, _CHOICE_SCORES[choice], cluster=prompt_id))
        for pk in (a.pk, b.pk):
            seen.setdefault(pk, set()).add(comparison_id)
    if not games:
        return []
    rated = sorted((versions[pk] for pk in seen), key=lambda v: v.number)
    labels = [v.label for v in rated]
    anchor = "base" if "base" in labels else None
    ratings = bootstrap_bradley_terry(games, players=labels, anchor=anchor)
    return [
        LeaderboardEntry(
            version=r.player,
            number=v.number,
            rating=r.rating,
            low=r.low,
            high=r.high,
            comparisons=len(seen[v.pk]),
        )
        for v, r in zip(rated, ratings, strict=True)
    ]
