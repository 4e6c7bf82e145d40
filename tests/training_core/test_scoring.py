"""Scoring given completions under a model, for the KL estimate of the evaluation."""

from __future__ import annotations

from typing import Any

import pytest

from training.core.generation import generate
from training.core.scoring import sequence_logprobs

from .conftest import build_model

PROMPTS: list[Any] = [
    [{"role": "user", "content": "What is two plus two?"}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    "The quick brown fox",
]


def test_it_gives_back_the_sampling_logprob_under_the_sampling_model(tiny_tokenizer: Any) -> None:
    model = build_model(tiny_tokenizer)
    rows = generate(
        (model, tiny_tokenizer), PROMPTS, k=3, temperature=1.0, top_p=1.0, max_new_tokens=12
    )
    prompts = [p for p, row in zip(PROMPTS, rows, strict=True) for _ in row]
    samples = [s for row in rows for s in row]
    scores = sequence_logprobs(
        model, tiny_tokenizer, prompts, [s.token_ids for s in samples], batch_size=4
    )
    assert scores == pytest.approx([s.logprob for s in samples], abs=1e-4)
    # another model gives the same texts other probabilities
    other = sequence_logprobs(
        build_model(tiny_tokenizer, seed=1), tiny_tokenizer, prompts, [s.token_ids for s in samples]
    )
    assert all(abs(a - b) > 1e-3 for a, b in zip(scores, other, strict=True))


def test_it_refuses_an_empty_completion(tiny_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        sequence_logprobs(build_model(tiny_tokenizer), tiny_tokenizer, ["a"], [[]])
