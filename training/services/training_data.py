"""Judgments of a round's comparisons, aggregated into weighted preference pairs.

The rule itself lives in ``annotate.datasets.labels`` (shared with the exports); this module
picks the options a round's settings ask for and turns the rows into training pairs. Only
train comparisons are ever trained on: eval comparisons measure the model. Which judgments count
and the default pair weight are the project's counting rule (``annotate.datasets.counting``),
applied inside ``labels``, so training counts exactly what an export counts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from annotate.datasets.labels import PairOptions, comparison_pairs, preference_pairs
from annotate.models import Comparison, Judgment

from ..core.data import PreferencePair, with_system_prompt
from ..loop_settings import LoopSettings

if TYPE_CHECKING:
    from ..models import Round


@dataclass
class AggregatedPair:
    """A comparison's majority verdict, before it becomes a training pair."""

    comparison_id: int
    messages: list[dict[str, Any]]
    chosen: str
    rejected: str
    weight: float
    # The minority's vote share when the round trains on soft labels, else 0.
    label_smoothing: float = 0.0
    chosen_finished: bool | None = None
    rejected_finished: bool | None = None
    chosen_token_ids: list[int] | None = None
    rejected_token_ids: list[int] | None = None

    def to_preference_pair(self) -> PreferencePair:
        return PreferencePair(
            prompt=self.messages,
            chosen=self.chosen,
            rejected=self.rejected,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            chosen_finished=self.chosen_finished,
            rejected_finished=self.rejected_finished,
            chosen_token_ids=self.chosen_token_ids,
            rejected_token_ids=self.rejected_token_ids,
        )


def _options(settings: LoopSettings, **selection: Any) -> PairOptions:
    """Plain majority; how ties and both-bad votes count is ``settings.ties`` (``tie_votes``).

    The weight is agreement when the round asks for it (``agreement_weight``), else the
    project's counting rule's weight ("" in the options).
    """
    selection.setdefault("kinds", [Comparison.Kind.TRAIN])
    return PairOptions(weight="agreement" if settings.agreement_weight else "", **selection)


def train_options(settings: LoopSettings, rounds: list[int]) -> PairOptions:
    """The export options whose rows are the train pairs of ``rounds``: kinds "train", majority.

    An export with ``rounds`` and ``kinds=train`` (and no other option) has exactly these rows.
    """
    return _options(settings, rounds=rounds)


def replay_count(settings: LoopSettings, earlier: int) -> int:
    """How many of ``earlier`` pairs of earlier rounds a round replays (nearest whole pair)."""
    if settings.replay_share <= 0:
        return 0
    return math.floor(settings.replay_share * earlier + 0.5)


def _trained_prompt(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt as the policy saw it when sampling: with the round's system prompt, if any."""
    params = row.get("chosen_generation_params") or {}
    return with_system_prompt(row["prompt"], str(params.get("system_prompt") or ""))


def _aggregated(rows: Iterable[dict[str, Any]], settings: LoopSettings) -> list[AggregatedPair]:
    return [
        AggregatedPair(
            comparison_id=row["comparison_id"],
            messages=_trained_prompt(row),
            chosen=row["chosen"],
            rejected=row["rejected"],
            weight=row["weight"],
            label_smoothing=row["label_smoothing"] if settings.soft_labels else 0.0,
            chosen_finished=row.get("chosen_finished"),
            rejected_finished=row.get("rejected_finished"),
            chosen_token_ids=row.get("chosen_token_ids"),
            rejected_token_ids=row.get("rejected_token_ids"),
        )
        for row in rows
    ]


def aggregate(comparisons: list[Comparison], settings: LoopSettings) -> list[AggregatedPair]:
    """The labelled pairs of the given train comparisons, in comparison id order.

    A side wins only with more votes than the other side and than the tie and both-bad votes
    together; other comparisons give no pair, and eval comparisons never do. Only the
    judgments the project's counting rule keeps are votes. With ``agreement_weight`` the
    pair's weight is the majority's share of the votes, with tie and both-bad votes counted by
    ``settings.ties`` ("weak": half for each side, "drop": not at all), else the counting
    rule's weight. With ``soft_labels`` the pair's label smoothing is the minority's share.
    """
    rows = comparison_pairs(
        Comparison.objects.filter(pk__in=[c.pk for c in comparisons]),
        _options(settings),
        tie_votes=settings.ties,
    )
    return _aggregated(rows, settings)


def _train_pairs(
    loop_round: Round, settings: LoopSettings, numbers: list[int]
) -> list[AggregatedPair]:
    """``aggregate`` over the train comparisons of the project's rounds ``numbers``."""
    options = train_options(settings, numbers)
    return _aggregated(
        preference_pairs(loop_round.project, options, tie_votes=settings.ties), settings
    )


def round_pairs(loop_round: Round, settings: LoopSettings) -> tuple[list[AggregatedPair], int]:
    """The round's own pairs, then the replayed ones; returns (pairs, replayed).

    Replay takes ``replay_share`` of the earlier rounds' train pairs (rounded to the nearest
    pair): 1 all of them, so round n trains on all data so far; less, a seeded sample of them
    that is the same each time the round is trained. Pairs of rounds after this one are
    never taken.
    """
    own = _train_pairs(loop_round, settings, [loop_round.number])
    replayed: list[AggregatedPair] = []
    if settings.replay_share > 0 and loop_round.number > 1:
        earlier = _train_pairs(loop_round, settings, list(range(1, loop_round.number)))
        wanted = replay_count(settings, len(earlier))
        rng = random.Random(settings.seed * 7919 + loop_round.number)
        chosen = sorted(rng.sample(range(len(earlier)), wanted))
        replayed = [earlier[i] for i in chosen]
    return own + replayed, len(replayed)


@dataclass
class WinRate:
    """How often one version's completion was preferred, ties counting half."""

    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float | None:
        return (self.wins + 0.5 * self.ties) / self.n if self.n else None

    def interval(self, z: float = 1.96) -> tuple[float, float] | None:
        """Wilson score interval of the rate (95% by default)."""
        if not self.n:
            return None
        p, n = self.rate or 0.0, self.n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def to_dict(self) -> dict[str, Any]:
        interval = self.interval()
        return {
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "n": self.n,
            "rate": self.rate,
            "low": interval[0] if interval else None,
            "high": interval[1] if interval else None,
        }


def eval_win_rates(loop_round: Round) -> dict[int, WinRate]:
    """Human win rate of the round's policy against each opponent version, by its id.

    Every judgment on an eval comparison counts once (no majority), so overlap adds evidence.
    """
    policy_id = loop_round.policy_id
    rates: dict[int, WinRate] = {}
    comparisons = Comparison.objects.filter(
        project_id=loop_round.project_id, round=loop_round.number, kind=Comparison.Kind.EVAL
    ).select_related("completion_a", "completion_b")
    by_id = {c.pk: c for c in comparisons}
    for comparison_id, choice in Judgment.objects.filter(comparison__in=list(by_id)).values_list(
        "comparison_id", "choice"
    ):
        comparison = by_id[comparison_id]
        a_version = comparison.completion_a.model_version_id
        b_version = comparison.completion_b.model_version_id
        if policy_id == a_version:
            opponent, policy_side = b_version, Judgment.Choice.A
        elif policy_id == b_version:
            opponent, policy_side = a_version, Judgment.Choice.B
        else:
            continue
        if opponent is None:
            continue
        rate = rates.setdefault(opponent, WinRate(0, 0, 0))
        if choice == policy_side:
            rate.wins += 1
        elif choice in (Judgment.Choice.A, Judgment.Choice.B):
            rate.losses += 1
        else:
            rate.ties += 1
    return rates
