"""Turning a prompt's sampled completions into comparison pairs for annotators.

A strategy only orders the candidate pairs (every two samples with distinct texts); the same
selection then takes pairs in that order, preferring pairs that share no sample so that each
comparison brings new texts. Ties in a strategy's order are broken by a shuffle seeded with
``seed``, so a round's pairs are reproducible.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # for annotations only: the generation module imports torch, pairing does not need it
    from .generation import Sample

# The values of the loop setting ``pairing``.
PAIRING_STRATEGIES = ("random", "most_different", "best_vs_worst")

# scores(texts) -> one number per text, higher is better (a simulated judge's verdicts)
Scorer = Callable[[list[str]], Sequence[float]]

_WORD = re.compile(r"\w+")


def word_distance(a: str, b: str) -> tuple[float, int]:
    """How different two texts are: Jaccard distance of their word sets, then length gap.

    The first number is ``1 - |A & B| / |A | B|`` over the lowercased words (``\\w+``) of each
    text, in [0, 1]. It measures whether two replies say different things rather than where
    they say it: two samples of one prompt often share an opening and then diverge, and a
    token-level edit distance would count a sentence moved by one position as wholly changed,
    and grows with length, so that it would mostly pick the two longest samples. The second
    number, the difference in word counts, only orders pairs whose word sets are equally far
    apart (a reply against its own longer continuation is a real contrast).
    """
    words_a = _WORD.findall(a.lower())
    words_b = _WORD.findall(b.lower())
    set_a, set_b = set(words_a), set(words_b)
    union = set_a | set_b
    jaccard = 1.0 - len(set_a & set_b) / len(union) if union else 0.0
    return jaccard, abs(len(words_a) - len(words_b))


def make_pairs(
    samples: Sequence[Sample],
    max_pairs: int | None = 1,
    seed: int | None = None,
    strategy: str = "random",
    score: Scorer | None = None,
) -> list[tuple[int, int]]:
    """Choose which samples of one prompt to compare.

    Identical texts (after stripping surrounding whitespace) are never paired: a comparison of a
    text with itself carries no preference.

    Args:
        samples: the k samples of one prompt.
        max_pairs: how many pairs to return at most (default one comparison per prompt); None
            returns every candidate pair, in the strategy's order.
        seed: shuffles the candidate pairs first (None keeps sample order), which decides the
            order under ``random`` and breaks ties under the other strategies.
        strategy: ``random``: pairs in shuffled order. ``most_different``: the pairs whose
            texts differ the most by :func:`word_distance` first. ``best_vs_worst``: ``score``
            rates every sample, and the pairs with the largest score gap come first, so the
            first pair is the best sample against the worst and the next disjoint one the
            second best against the second worst; samples with equal scores are still paired
            when nothing else is left.
        score: for ``best_vs_worst`` (ignored otherwise): takes the k texts, returns a score per
            text, higher is better. Passed in so that the judge stays outside the core.

    Returns:
        Index pairs ``(a, b)`` into ``samples`` with ``a < b``.

    Raises:
        ValueError: an unknown strategy, or ``best_vs_worst`` without ``score``.
    """
    if strategy not in PAIRING_STRATEGIES:
        raise ValueError(
            f"unknown pairing strategy {strategy!r}: use one of {', '.join(PAIRING_STRATEGIES)}"
        )
    if strategy == "best_vs_worst" and score is None:
        raise ValueError("pairing best_vs_worst needs a score for each sample")
    texts = [s.text for s in samples]
    candidates = [
        (a, b)
        for a, b in itertools.combinations(range(len(texts)), 2)
        if texts[a].strip() != texts[b].strip()
    ]
    if seed is not None:
        random.Random(seed).shuffle(candidates)
    # sorts below are stable, so the shuffle decides among equally ranked pairs
    if strategy == "most_different":
        distance = {pair: word_distance(texts[pair[0]], texts[pair[1]]) for pair in candidates}
        candidates.sort(key=lambda pair: distance[pair], reverse=True)
    elif strategy == "best_vs_worst" and candidates:
        assert score is not None
        scores = list(score(texts))
        if len(scores) != len(texts):
            raise ValueError(f"score returned {len(scores)} scores for {len(texts)} samples")
        candidates.sort(key=lambda pair: abs(scores[pair[0]] - scores[pair[1]]), reverse=True)
    if max_pairs is None:
        return candidates
    chosen: list[tuple[int, int]] = []
    used: set[int] = set()
    for a, b in candidates:
        if len(chosen) >= max_pairs:
            break
        if a not in used and b not in used:
            chosen.append((a, b))
            used.update((a, b))
    for pair in candidates:
        if len(chosen) >= max_pairs:
            break
        if pair not in chosen:
            chosen.append(pair)
    return chosen
