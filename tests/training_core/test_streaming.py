"""Token-by-token sampling: the same completions as `generate`, handed out as they grow."""

from __future__ import annotations

from typing import Any

import pytest

from training.core import generate, load_model
from training.core.streaming import Finished, TextDelta, _Detokenizer, stream_samples
from training.core.tiny import word_tokenizer

PROMPT = [{"role": "user", "content": "Write a short poem about the sea."}]


def _collect(events: list[Any], n: int) -> tuple[list[str], list[Finished], list[list[str]]]:
    pieces: list[list[str]] = [[] for _ in range(n)]
    finished: list[Finished] = []
    for event in events:
        if isinstance(event, TextDelta):
            assert not any(f.index == event.index for f in finished), "text after Finished"
            pieces[event.index].append(event.text)
        else:
            finished.append(event)
    return ["".join(p) for p in pieces], sorted(finished, key=lambda f: f.index), pieces


@pytest.mark.parametrize(("n", "seed", "temperature"), [(1, 3, 1.0), (3, 7, 1.3), (2, 0, 0.0)])
def test_it_streams_the_completions_generate_samples(tiny_model_dir, n, seed, temperature):
    model, tokenizer = load_model(tiny_model_dir)
    (expected,) = generate(
        (model, tokenizer),
        [PROMPT],
        k=n,
        batch_size=n,
        seed=seed,
        temperature=temperature,
        top_p=0.95,
        max_new_tokens=24,
    )
    events = list(
        stream_samples(
            model,
            tokenizer,
            PROMPT,
            n=n,
            seed=seed,
            temperature=temperature,
            top_p=0.95,
            max_new_tokens=24,
        )
    )
    texts, finished, pieces = _collect(events, n)
    assert texts == [s.text for s in expected]
    assert [f.index for f in finished] == list(range(n))
    assert [f.text for f in finished] == [s.text for s in expected]
    assert [f.finished for f in finished] == [s.finished for s in expected]
    assert [f.token_count for f in finished] == [s.token_count for s in expected]
    if temperature > 0:
        # sampled from a random tiny model, the answers are long: they come in many pieces
        assert max(len(p) for p in pieces) > 3


def test_it_interleaves_the_choices_step_by_step(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    events = list(stream_samples(model, tokenizer, PROMPT, n=2, seed=5, max_new_tokens=16))
    deltas = [e.index for e in events if isinstance(e, TextDelta)]
    assert set(deltas) == {0, 1}
    # choice 1's text starts before choice 0's has all come: the choices take turns
    assert deltas != sorted(deltas)


def test_it_holds_back_text_the_next_token_may_rewrite():
    # the word tokenizer's decoder cleans up "a ." into "a." and "do n't" into "don't"
    tokenizer = word_tokenizer(["hello", "world", ".", "do", "n't", "it"])
    stream = _Detokenizer(tokenizer)
    pieces = [stream.push(tokenizer.convert_tokens_to_ids(t)) for t in ["hello", "world", "."]]
    pieces += [stream.push(tokenizer.convert_tokens_to_ids(t)) for t in ["do", "n't", "it"]]
    rest, whole = stream.finish()
    assert whole == tokenizer.decode(stream.ids, skip_special_tokens=True)
    assert "".join(pieces) + rest == whole
    assert len([p for p in pieces if p]) >= 3
