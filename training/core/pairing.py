"""Turning sampled completions into comparison pairs for annotators."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # for annotations only: the generation module imports torch, pairing does not need it
    from .generation import Sample


def make_pairs(
    samples: Sequence[Sample],
    max_pairs: int = 1,
    seed: int | None = None,
    strategy: str = "first",
) -> list[tuple[int, int]]:
    """Choose which samples of one prompt to compare.

    Identical texts (after stripping surrounding whitespace) are never paired: a comparison of a
    text with itself carries no preference.

    Args:
        samples: the k samples of one prompt.
        max_pairs: how many pairs to return at most (default one comparison per prompt).
        seed: shuffles the candidate pairs before picking (None keeps sample order).
        strategy: "first" takes candidate pairs in order; "all" ignores ``max_pairs`` and
            returns every distinct pair.

    Returns:
        Index pairs ``(a, b)`` into ``samples`` with ``a < b``.
    """
    if strategy not in ("first", "all"):
        raise ValueError(f"unknown pairing strategy {strategy!r}")
    candidates = [
        (a, b)
        for a, b in itertools.combinations(range(len(samples)), 2)
        if samples[a].text.strip() != samples[b].text.strip()
    ]
    if seed is not None:
        random.Random(seed).shuffle(candidates)
    if strategy == "all":
        return candidates
    # prefer pairs that share no sample, so each comparison brings new texts
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
