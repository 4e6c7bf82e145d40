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

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models import F, OrderBy
from django.db.models.functions import Abs

from .models import Comparison, Negated, Project

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


# A prompt's figures, computed by the database in the statement that writes them onto its
# pairs. A pair's disagreement is the share of its judgments that differ from its most common
# choice (A, B, tie and both-bad are categories), defined from two judgments on; the prompt's
# disagreement is the mean over its pairs that have one, 0 when none has; its judged pairs are
# those with at least one judgment. Hidden repeats are left out: they are not pairs of their own.
# ``_VOTES`` (its parameters: the prompt and the repeat kind) is named ``votes`` in the WITH list.
_VOTES = (
    "SELECT j.comparison_id, j.choice FROM annotate_judgment j"
    " JOIN annotate_comparison c ON c.id = j.comparison_id WHERE c.prompt_id = %s AND c.kind <> %s"
)
_BY_PAIR = (
    " by_choice AS (SELECT comparison_id, COUNT(*) AS n FROM votes GROUP BY comparison_id, choice),"
    " by_pair AS (SELECT SUM(n) AS total, MAX(n) AS top FROM by_choice GROUP BY comparison_id)"
)
_FIGURES = (
    " prompt_disagreement = COALESCE((SELECT AVG(1.0 - CAST(top AS DOUBLE PRECISION) / total)"
    "   FROM by_pair WHERE total >= 2), 0.0),"
    " prompt_judged_pairs = (SELECT COUNT(*) FROM by_pair)"
)
_REFRESH_PROMPT = (
    f"WITH votes AS ({_VOTES}),{_BY_PAIR}"  # noqa: S608 (no request text in it)
    f" UPDATE annotate_comparison SET{_FIGURES} WHERE prompt_id = %s"
)


def refresh_prompts(prompt_ids: Iterable[int]) -> None:
    """Recompute the selection figures of these prompts and copy them onto their pairs: one
    statement per prompt."""
    with connection.cursor() as cursor:
        for prompt_id in set(prompt_ids):
            cursor.execute(_REFRESH_PROMPT, [prompt_id, Comparison.Kind.REPEAT, prompt_id])


def count_and_refresh(
    comparison_id: int, prompt_id: int, choice: str, kind: str
) -> tuple[str, list[Any]]:
    """PostgreSQL's part of the statement that stores a judgment (``annotate.services``): WITH
    clauses, ending in one named ``c``, that count the judgment on its pair and refresh the
    figures of the pair's prompt; and their parameters.

    The judgment's own row, inserted by the same statement, is not in the statement's snapshot,
    so it joins the prompt's stored votes here as one more. Its pair's count goes up in the same
    update as the figures, since a statement may write a row only once.
    """
    sql = (
        f"votes AS ({_VOTES} UNION ALL SELECT CAST(%s AS bigint), CAST(%s AS text) WHERE %s),"  # noqa: S608
        f"{_BY_PAIR}, c AS (UPDATE annotate_comparison SET"
        f" judgment_count = judgment_count + CASE WHEN id = %s THEN 1 ELSE 0 END,{_FIGURES}"
        " WHERE prompt_id = %s)"
    )
    repeat = Comparison.Kind.REPEAT
    return sql, [prompt_id, repeat, comparison_id, choice, kind != repeat, comparison_id, prompt_id]
