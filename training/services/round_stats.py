"""What a round's data looks like: how its completions end, and how its annotators voted.

Recorded on ``Round.stats`` (sampling at the end of generation, votes when training starts) and
shown on the loop page and in the rounds API, so that a lead sees truncated or contested data
before it is trained on. ``pair_counts`` counts, live, the pairs a round trains on and why its
other judged comparisons give none.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from annotate.datasets.labels import PairOptions, Tally, preference_pairs, selected_comparisons
from annotate.models import Comparison, Completion, Judgment

from ..loop_settings import LoopSettings
from .training_data import replay_count, train_options

if TYPE_CHECKING:
    from ..models import Round


def sample_stats(loop_round: Round) -> dict[str, Any]:
    """Length and truncation of the policy's train completions in the round.

    ``truncated_share`` counts completions that hit ``max_new_tokens``, among those whose end is
    known; ``mean_tokens`` is their mean length in tokens.
    """
    rows = list(
        Completion.objects.filter(
            prompt_id__in=loop_round.prompt_ids,
            round_number=loop_round.number,
            model_version_id=loop_round.policy_id,
        ).values_list("finished", "token_count")
    )
    known = [finished for finished, _ in rows if finished is not None]
    lengths = [n for _, n in rows if n is not None]
    return {
        "completions": len(rows),
        "truncated_share": round(known.count(False) / len(known), 4) if known else None,
        "mean_tokens": round(sum(lengths) / len(lengths), 2) if lengths else None,
    }


def judgment_stats(loop_round: Round) -> dict[str, Any]:
    """How the annotators voted on the round's train comparisons.

    ``tie_rate`` and ``both_bad_rate`` are shares of all votes; ``agreement`` is the mean, over
    comparisons with two votes or more, of the share of votes for the most common choice (1.0:
    everyone agreed), None when no comparison has two votes.
    """
    votes = Judgment.objects.filter(
        comparison__project_id=loop_round.project_id,
        comparison__round=loop_round.number,
        comparison__kind=Comparison.Kind.TRAIN,
    ).values_list("comparison_id", "choice")
    by_comparison: dict[int, Counter[str]] = {}
    for comparison_id, choice in votes:
        by_comparison.setdefault(comparison_id, Counter())[choice] += 1
    total = sum(sum(c.values()) for c in by_comparison.values())
    shares = [
        max(c.values()) / sum(c.values()) for c in by_comparison.values() if sum(c.values()) > 1
    ]

    def rate(choice: str) -> float | None:
        n = sum(c[choice] for c in by_comparison.values())
        return round(n / total, 4) if total else None

    return {
        "judgments": total,
        "tie_rate": rate(Judgment.Choice.TIE),
        "both_bad_rate": rate(Judgment.Choice.BOTH_BAD),
        "agreement": round(sum(shares) / len(shares), 4) if shares else None,
        "pairs_with_several_votes": len(shares),
    }


# Why a judged comparison of a round gave no training pair: (one, several, why), in page order.
NOT_TRAINED = {
    "single_vote_tie": ("single-vote tie", "single-vote ties", "one vote, and it said tie"),
    "disagreement": (
        "disagreement",
        "disagreements",
        "the sides got as many votes as each other",
    ),
    "tie": ("tie", "ties", "tie and both-bad votes matched or beat the leading side"),
    "both_bad": ("both-bad pair", "both-bad pairs", "most votes said both answers are bad"),
    "filtered": ("pair left out", "pairs left out", "the label rule's vote filters dropped it"),
    "eval": ("eval pair", "eval pairs", "they measure versions and are never trained on"),
    "gold": ("gold pair", "gold pairs", "they check annotators and are not trained on"),
}


@dataclass
class PairCounts:
    """How a round's judged comparisons became training pairs, or why they did not.

    ``trained`` is the number of rows of the export ``export`` (the round's train pairs under the
    one label rule that training applies); ``judged`` = ``trained`` + every ``not_trained``.
    """

    round: int
    trained: int
    replayed: int  # earlier rounds' pairs trained again with this round's (``replay_share``)
    judged: int  # comparisons of the round with a vote, every kind
    unjudged: int  # train comparisons of the round without a vote yet
    not_trained: dict[str, int] = field(default_factory=dict)  # reason (NOT_TRAINED) -> count
    export: dict[str, Any] = field(default_factory=dict)

    @property
    def reasons(self) -> list[str]:
        """``not_trained`` as sentences: "2 single-vote ties: one vote, and it said tie"."""
        lines = []
        for key, (one, several, why) in NOT_TRAINED.items():
            n = self.not_trained.get(key, 0)
            if n:
                lines.append(f"{n} {one if n == 1 else several}: {why}")
        return lines

    @property
    def not_trained_total(self) -> int:
        return sum(self.not_trained.values())

    @property
    def export_query(self) -> str:
        """The export's query string, for a download link."""
        return urlencode(
            {
                "format": "trl",
                "bundle": "file",
                "aggregation": "majority",
                **{
                    k: ",".join(map(str, v)) if isinstance(v, list) else v
                    for k, v in self.export.items()
                },
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "trained": self.trained,
            "replayed": self.replayed,
            "judged": self.judged,
            "unjudged": self.unjudged,
            "not_trained": dict(self.not_trained),
            "export": dict(self.export),
        }


def _why_not(kind: str, tally: Tally) -> str:
    """The NOT_TRAINED key of a judged comparison that gave no pair."""
    if kind != Comparison.Kind.TRAIN:
        return kind
    outcome = tally.outcome
    if outcome == "both_bad":
        return "both_bad"
    if outcome != "tie":
        return "filtered"
    if tally.total == 1:
        return "single_vote_tie"
    if tally.a == tally.b and tally.a > 0:
        return "disagreement"
    return "tie"


def pair_counts(loop_round: Round) -> PairCounts:
    """The round's pairs counted with the options and rule its training uses (``round_pairs``).

    ``trained`` comes from ``preference_pairs`` with ``train_options``, the same call that
    training makes, so it equals the rows of an export with ``rounds=<n>`` and ``kinds=train``.
    """
    settings = LoopSettings.from_dict(loop_round.settings)
    project, number = loop_round.project, loop_round.number
    options = train_options(settings, [number])
    trained = {
        row["comparison_id"] for row in preference_pairs(project, options, tie_votes=settings.ties)
    }
    earlier = 0
    if number > 1 and settings.replay_share > 0:
        earlier_options = train_options(settings, list(range(1, number)))
        earlier = sum(
            1 for _ in preference_pairs(project, earlier_options, tie_votes=settings.ties)
        )
    every_kind = PairOptions(rounds=[number], kinds=list(Comparison.Kind.values))
    not_trained: Counter[str] = Counter()
    judged = 0
    for comparison in selected_comparisons(project, every_kind).iterator(chunk_size=2000):
        judged += 1
        if comparison.pk in trained:
            continue
        tally = Tally(
            a=comparison.votes_a,  # type: ignore[attr-defined]
            b=comparison.votes_b,  # type: ignore[attr-defined]
            tie=comparison.votes_tie,  # type: ignore[attr-defined]
            both_bad=comparison.votes_both_bad,  # type: ignore[attr-defined]
        )
        not_trained[_why_not(comparison.kind, tally)] += 1
    unjudged = Comparison.objects.filter(
        project=project, round=number, kind=Comparison.Kind.TRAIN, judgment_count=0
    ).count()
    return PairCounts(
        round=number,
        trained=len(trained),
        replayed=replay_count(settings, earlier),
        judged=judged,
        unjudged=unjudged,
        not_trained={k: not_trained[k] for k in NOT_TRAINED if not_trained[k]},
        export={"rounds": [number], "kinds": list(options.kinds), "weight": options.weight},
    )
