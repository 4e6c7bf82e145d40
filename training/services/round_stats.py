"""What a round's data looks like: how its completions end, and how its annotators voted.

Recorded on ``Round.stats`` (sampling at the end of generation, votes when training starts) and
shown on the loop page and in the rounds API, so that a lead sees truncated or contested data
before it is trained on.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from annotate.models import Comparison, Completion, Judgment

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
