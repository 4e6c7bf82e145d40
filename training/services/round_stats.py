"""What a round's data looks like: how its completions end, and how its annotators voted.

Recorded on ``Round.stats`` (sampling at the end of generation, votes when training starts) and
shown on the loop page and in the rounds API, so that a lead sees truncated or contested data
before it is trained on. ``pair_counts`` counts, live, the pairs a round trains on and why its
other judged comparisons give none.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.db.models import Count, Max

from annotate.datasets.counting import COUNTING_FIELDS
from annotate.datasets.labels import Tally, preference_pairs
from annotate.models import Comparison, Completion, Judgment, Membership, Project

from ..loop_settings import LoopSettings
from ..models import Round
from .training_data import replay_count, train_options


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


# Counts are kept while the project's votes, comparisons and rounds stay the same.
_CACHE_SECONDS = 3600

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
    "uncounted": (
        "pair without counted votes",
        "pairs without counted votes",
        "the project's counting rule left out every judgment on them",
    ),
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
    if tally.total == 0:
        return "uncounted"
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


def _count_pairs(project: Project, rounds: list[Round]) -> dict[int, PairCounts]:
    """``pair_counts`` of the given rounds of the project, in two passes over its data.

    Which comparisons give pairs does not depend on a round's settings (they set weights, label
    smoothing and replay), so one ``preference_pairs`` call with the options training uses
    (``train_options``) finds the trained comparisons of every round at once.
    """
    if not rounds:
        return {}
    defaults = LoopSettings()
    numbers = [r.number for r in rounds]
    # every round up to the last, for replay: imported pairs may carry round numbers of their own
    options = train_options(defaults, list(range(1, max(numbers) + 1)))
    trained: dict[int, set[int]] = {n: set() for n in options.rounds}
    for row in preference_pairs(project, options, tie_votes=defaults.ties):
        trained[row["round"]].add(row["comparison_id"])
    judgments = Judgment.objects.filter(comparison__project=project, comparison__round__in=numbers)
    # every judged comparison, then the votes the label rule saw: those the counting rule keeps
    judged_comparisons = (
        judgments.order_by()
        .values_list("comparison_id", "comparison__round", "comparison__kind")
        .distinct()
    )
    tallies: dict[int, tuple[int, str, Counter[str]]] = {}
    for comparison_id, number, kind in judged_comparisons:
        if number is not None:  # always: the rounds were asked for
            tallies[comparison_id] = (number, kind, Counter())
    votes = (
        options.counting(project)
        .counted(judgments)
        .order_by()
        .values_list("comparison_id", "choice")
        .annotate(n=Count("pk"))
    )
    for comparison_id, choice, n in votes:
        tallies[comparison_id][2][choice] += n
    judged: Counter[int] = Counter()
    not_trained: dict[int, Counter[str]] = {n: Counter() for n in numbers}
    for comparison_id, (number, kind, choices) in tallies.items():
        judged[number] += 1
        if comparison_id not in trained[number]:
            tally = Tally(
                a=choices["a"], b=choices["b"], tie=choices["tie"], both_bad=choices["both_bad"]
            )
            not_trained[number][_why_not(kind, tally)] += 1
    unjudged = Counter(
        Comparison.objects.filter(
            project=project, round__in=numbers, kind=Comparison.Kind.TRAIN, judgment_count=0
        ).values_list("round", flat=True)
    )
    weight = options.weight or project.count_weight
    counts: dict[int, PairCounts] = {}
    for loop_round in rounds:
        number = loop_round.number
        settings = LoopSettings.from_dict(loop_round.settings)
        earlier = sum(len(trained[n]) for n in range(1, number))
        counts[number] = PairCounts(
            round=number,
            trained=len(trained[number]),
            replayed=replay_count(settings, earlier) if number > 1 else 0,
            judged=judged[number],
            unjudged=unjudged[number],
            not_trained={k: not_trained[number][k] for k in NOT_TRAINED if not_trained[number][k]},
            export={
                "rounds": [number],
                "kinds": list(options.kinds),
                "weight": train_options(settings, [number]).weight or weight,
            },
        )
    return counts


def _state_key(project: Project) -> str:
    """Changes whenever a count could: new or undone votes, comparisons, round settings."""
    judgments = Judgment.objects.filter(project=project).aggregate(n=Count("pk"), top=Max("pk"))
    comparisons = Comparison.objects.filter(project=project).aggregate(n=Count("pk"), top=Max("pk"))
    rounds = list(
        Round.objects.filter(project=project)
        .order_by("number")
        .values_list("pk", "number", "settings")
    )
    # the counting rule's inputs: its settings, who is paused, the gold answers
    rule = [getattr(project, name) for name in COUNTING_FIELDS]
    paused = list(
        Membership.objects.filter(project=project, paused=True)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    gold = list(
        Comparison.objects.filter(project=project)
        .exclude(gold_choice="")
        .order_by("pk")
        .values_list("pk", "gold_choice")
    )
    state = (
        project.pk,
        project.created_at.isoformat(),
        (judgments["n"], judgments["top"]),
        (comparisons["n"], comparisons["top"]),
        rounds,
        rule,
        paused,
        gold,
    )
    return "round-pairs:" + hashlib.sha256(repr(state).encode()).hexdigest()


def project_pair_counts(project: Project) -> dict[int, PairCounts]:
    """``pair_counts`` of every round of the project by number, computed again only when the
    project's votes, comparisons or rounds have changed (the loop page asks for each row)."""
    key = _state_key(project)
    counts: dict[int, PairCounts] | None = cache.get(key)
    if counts is None:
        rounds = list(Round.objects.filter(project=project))
        counts = _count_pairs(project, rounds)
        cache.set(key, counts, _CACHE_SECONDS)
    return counts


def pair_counts(loop_round: Round) -> PairCounts:
    """The round's pairs counted with the options and rule its training uses (``round_pairs``).

    ``trained`` comes from ``preference_pairs`` with ``train_options``, the same call that
    training makes, so it equals the rows of an export with ``rounds=<n>`` and ``kinds=train``;
    ``replayed`` is what ``replay_share`` adds from the earlier rounds' pairs.
    """
    counts = project_pair_counts(loop_round.project).get(loop_round.number)
    if counts is None:  # a round the cached state did not have yet
        counts = _count_pairs(loop_round.project, [loop_round])[loop_round.number]
    return counts
