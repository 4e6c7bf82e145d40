"""Pairing strategies on fixed samples, against orders worked out by hand."""

from __future__ import annotations

import pytest

from training.core.generation import Sample
from training.core.pairing import make_pairs, word_distance


def _samples(*texts: str) -> list[Sample]:
    return [Sample(text, 1, -1.0) for text in texts]


# Word sets and counts:  0 {the, cat, sat} 3   1 {the, cat, sat, down} 4   2 {a, dog, ran} 3
# 3 {the, dog, sat} 3. Jaccard distance, word-count gap of each pair:
# (0,1) 1-3/4=0.25, 1   (0,2) 1-0/6=1.0, 0   (0,3) 1-2/4=0.5, 0
# (1,2) 1-0/7=1.0, 1    (1,3) 1-2/5=0.6, 1   (2,3) 1-1/5=0.8, 0
FOUR = _samples("The cat sat.", "the cat sat down", "A dog ran!", "the dog sat")
MOST_DIFFERENT_ORDER = [(1, 2), (0, 2), (2, 3), (1, 3), (0, 3), (0, 1)]


def test_word_distance_is_jaccard_of_lowercased_words_then_length_gap() -> None:
    assert word_distance("The cat, the CAT!", "cat") == (0.5, 3)
    assert word_distance("the cat sat", "the cat sat down") == (0.25, 1)
    assert word_distance("a dog ran", "the dog sat") == (0.8, 0)
    # texts without words are equally far from each other
    assert word_distance("!!", "?") == (0.0, 0)
    assert word_distance("", "hello") == (1.0, 1)


def test_it_skips_identical_texts_and_keeps_sample_order_without_seed() -> None:
    samples = _samples("a", "a ", "b")
    assert make_pairs(samples) == [(0, 2)]
    assert make_pairs(samples, max_pairs=None) == [(0, 2), (1, 2)]
    assert make_pairs(_samples("x", "x")) == []
    assert make_pairs(_samples("a", "b", "c", "d"), max_pairs=2) == [(0, 1), (2, 3)]


def test_random_is_fixed_by_the_seed_and_varies_with_it() -> None:
    picks = {seed: make_pairs(FOUR, seed=seed) for seed in range(20)}
    assert all(make_pairs(FOUR, seed=seed) == pick for seed, pick in picks.items())
    assert len({tuple(p) for p in picks.values()}) > 1


@pytest.mark.parametrize("seed", [None, 0, 1, 7])
def test_most_different_ranks_pairs_by_word_distance(seed: int | None) -> None:
    assert make_pairs(FOUR, max_pairs=None, seed=seed, strategy="most_different") == (
        MOST_DIFFERENT_ORDER
    )
    assert make_pairs(FOUR, seed=seed, strategy="most_different") == [(1, 2)]
    # the second pair shares no sample with the first: (0, 3) is the only one left
    assert make_pairs(FOUR, max_pairs=2, seed=seed, strategy="most_different") == [
        (1, 2),
        (0, 3),
    ]


def test_most_different_breaks_ties_by_the_seeded_shuffle() -> None:
    equal = _samples("red", "green", "blue")  # every pair at distance (1.0, 0)
    for seed in range(10):
        assert make_pairs(equal, max_pairs=None, seed=seed, strategy="most_different") == (
            make_pairs(equal, max_pairs=None, seed=seed)
        )


def test_best_vs_worst_pairs_the_highest_score_with_the_lowest() -> None:
    seen: list[list[str]] = []

    def score(texts: list[str]) -> list[float]:
        seen.append(texts)
        return [2.0, 0.0, 3.0, 1.0]

    # gaps: (0,1) 2, (0,2) 1, (0,3) 1, (1,2) 3, (1,3) 1, (2,3) 2
    assert make_pairs(FOUR, seed=3, strategy="best_vs_worst", score=score) == [(1, 2)]
    assert seen == [[s.text for s in FOUR]]
    # then the second best against the second worst
    assert make_pairs(FOUR, max_pairs=2, seed=3, strategy="best_vs_worst", score=score) == [
        (1, 2),
        (0, 3),
    ]


def test_best_vs_worst_never_pairs_identical_texts() -> None:
    samples = _samples("x", "x ", "y")
    # the best (0) and the worst (1) say the same, so the widest real gap is (0, 2)
    picked = make_pairs(samples, strategy="best_vs_worst", score=lambda t: [5.0, 0.0, 1.0])
    assert picked == [(0, 2)]


def test_best_vs_worst_with_equal_scores_still_makes_the_seeded_pair() -> None:
    for seed in range(5):
        assert make_pairs(
            FOUR, seed=seed, strategy="best_vs_worst", score=lambda t: [1.0] * len(t)
        ) == make_pairs(FOUR, seed=seed)


def test_it_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="unknown pairing strategy 'first'"):
        make_pairs(FOUR, strategy="first")
    with pytest.raises(ValueError, match="needs a score"):
        make_pairs(FOUR, strategy="best_vs_worst")
    with pytest.raises(ValueError, match="2 scores for 4 samples"):
        make_pairs(FOUR, strategy="best_vs_worst", score=lambda t: [1.0, 2.0])
