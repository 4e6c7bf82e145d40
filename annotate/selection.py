"""Active pair selection: the order in which the queue offers a round's open pairs.

A lead picks one strategy per project (``Project.pair_selection``):

- ``random`` (default): a random key drawn once per comparison when it is created
  (``Comparison.random_key``), so the order is random without sorting the table per request.
- ``uncertainty``: the pairs whose implicit-reward margin under the serving policy is nearest
  zero first. The worker writes ``Comparison.policy_margin`` after each promotion
  (``training.services.active``); pairs not scored yet come last.
- ``disagreement``: pairs of the prompts whose judged pairs annotators disagree on most.
- ``coverage``: pairs of the prompts with the fewest judged pairs.

Every strategy keeps the newest round first; within a strategy's key, pairs closer to
completion come first, then the random key. The per-prompt figures are copied onto each
comparison of the prompt (``prompt_disagreement``, ``prompt_judged_pairs``) whenever one of its
judgments is recorded or undone, so that each order is read off an index (``queue_*`` on
``Comparison``; ``annotate.queue`` walks them).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models import F, OrderBy
from django.db.models.functions import Abs

from .models import Comparison, Judgment, Negated, Project

Strategy = Project.PairSelection


def strategy_key(strategy: str) -> Any:
    """The expression a strategy orders by, descending (its missing values last); None for
    ``random``. Each one is a column of a ``queue_*`` index of ``Comparison``."""
    if strategy == Strategy.UNCERTAINTY:
        # Nearest zero first is the largest -|margin|; descending keeps unscored pairs last on
        # both databases, which an ascending |margin| would not on SQLite.
        return Negated(Abs("policy_margin"))
    if strategy == Strategy.DISAGREEMENT:
        return F("prompt_disagreement")
    if strategy == Strategy.COVERAGE:
        # The fewest judged pairs first.
        return Negated(F("prompt_judged_pairs"))
    return None


def queue_order(strategy: str) -> list[Any]:
    """The ``order_by`` terms of one kind of open pair with one judgment count under
    ``strategy``: the newest round first, then the strategy's key, then the random key. The
    queue merges those ranges with :func:`merge_key`."""
    order: list[Any] = [F("round").desc(nulls_last=True)]
    key = strategy_key(strategy)
    if key is not None:
        order.append(OrderBy(key, descending=True, nulls_last=True))
    return [*order, "random_key", "pk"]


def merge_key(strategy: str) -> Any:
    """Sort key of the queue's rows (round, strategy key, judgment count, random key, id):
    the order of :func:`queue_order`, with more judgments first between the strategy key and
    the random key."""

    def key(row: tuple[Any, ...]) -> tuple[Any, ...]:
        round_number, value, judged, random_key, pk = row
        return (
            round_number is None,
            -(round_number or 0),
            value is None,
            -(value or 0),
            -judged,
            random_key,
            pk,
        )

    return key


def disagreement(choices: Iterable[str]) -> float | None:
    """One pair's disagreement: the share of its judgments that differ from its most common
    choice (A, B, tie and both-bad are categories); None below two judgments."""
    counts = Counter(choices)
    n = sum(counts.values())
    if n < 2:
        return None
    return 1.0 - max(counts.values()) / n


def prompt_figures(choices_by_pair: dict[int, list[str]]) -> tuple[float, int]:
    """(disagreement, judged pairs) of one prompt from the choices on each of its pairs.

    The prompt's disagreement is the mean disagreement of its pairs with two or more
    judgments, 0 when it has none; its judged pairs are those with at least one judgment.
    """
    judged = sum(1 for choices in choices_by_pair.values() if choices)
    values = [d for d in map(disagreement, choices_by_pair.values()) if d is not None]
    return (sum(values) / len(values) if values else 0.0), judged


def refresh_prompts(prompt_ids: Iterable[int]) -> None:
    """Recompute the selection figures of these prompts and copy them onto their pairs.

    Hidden repeats are left out of the figures: they are not pairs of their own.
    """
    for prompt_id in set(prompt_ids):
        choices: dict[int, list[str]] = defaultdict(list)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT j.comparison_id, j.choice FROM annotate_judgment j"
                " JOIN annotate_comparison c ON c.id = j.comparison_id"
                " WHERE c.prompt_id = %s AND c.kind <> %s",
                [prompt_id, Comparison.Kind.REPEAT],
            )
            for comparison_id, choice in cursor.fetchall():
                choices[comparison_id].append(choice)
            score, judged = prompt_figures(choices)
            cursor.execute(
                "UPDATE annotate_comparison SET prompt_disagreement = %s, prompt_judged_pairs = %s"
                " WHERE prompt_id = %s",
                [score, judged, prompt_id],
            )


def on_judgment(sender: Any, judgment: Judgment, **kwargs: Any) -> None:
    """``judgment_recorded`` receiver: refresh the figures of the judged pair's prompt."""
    refresh_prompts([judgment.comparison.prompt_id])
