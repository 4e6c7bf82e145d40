"""Sampling completions token by token, for answers that are shown while they are written.

`stream_samples` draws the same completions as `generation.generate` does for one prompt with
``k = batch_size = n`` and the same seed (the OpenAI server's non-streamed path), but yields the
text of each completion as it grows: one `TextDelta` per completion and step whose text moved,
then one `Finished` per completion. The deltas of a completion, joined, are exactly the text
`generate` returns for it.

Turning a growing list of ids into text is not always append-only: a token may be half of a
UTF-8 character (the decoder shows U+FFFD until the rest arrives), and the tokenizer's clean-up
joins a space to the punctuation after it (``"a ." -> "a."``, ``"do n't" -> "don't"``). So each
completion's decoded text is held back over any trailing replacement characters, whitespace or
apostrophes, which the next token may still rewrite.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .data import Message
from .generation import _eos_ids, _filter_top_p, _group_seed, _prompt_ids

# Characters at the end of the text that the next token may still rewrite (see above).
_UNSETTLED = " \t\n'\ufffd"


@dataclass(frozen=True)
class TextDelta:
    """More text of completion ``index``."""

    index: int
    text: str


@dataclass(frozen=True)
class Finished:
    """Completion ``index`` is done: all its text has been yielded."""

    index: int
    finished: bool  # False when max_new_tokens cut it short
    token_count: int  # generated tokens, including the final EOS when one was produced
    text: str  # the whole completion, as `generate` returns it


StreamEvent = TextDelta | Finished


class _Detokenizer:
    """The settled text of one completion's ids, handed out as new pieces."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    def _decode(self) -> str:
        return str(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def push(self, token: int) -> str:
        """Add one token; returns the text that is now settled and not yet handed out."""
        self.ids.append(token)
        settled = self._decode().rstrip(_UNSETTLED)
        if len(settled) <= len(self.sent) or not settled.startswith(self.sent):
            return ""
        piece = settled[len(self.sent) :]
        self.sent = settled
        return piece

    def finish(self) -> tuple[str, str]:
        """(the rest of the text, the whole text) once no token follows."""
        text = self._decode()
        # no known clean-up rule rewrites text before held-back characters; should one, fail
        # loudly rather than hand out pieces that do not add up to the answer
        if not text.startswith(self.sent):
            raise RuntimeError(f"streamed text {self.sent!r} is not a prefix of {text!r}")
        return text[len(self.sent) :], text


@torch.inference_mode()
def stream_samples(
    model: Any,
    tokenizer: Any,
    prompt: list[Message] | str,
    *,
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    seed: int = 0,
) -> Iterator[StreamEvent]:
    """Sample ``n`` completions of one prompt together, yielding text as each step adds it.

    The sampler is `generation.sample_batch`'s, step for step (same generator seed, same
    nucleus filter, same order of random draws), so the completions equal those of
    ``generate((model, tokenizer), [prompt], k=n, batch_size=n, seed=seed, ...)``. Within a
    step the deltas come in completion order; a completion's `Finished` follows its last delta.
    """
    model.eval()
    device = next(model.parameters()).device
    ids = _prompt_ids(tokenizer, prompt)
    generator = torch.Generator().manual_seed(_group_seed(seed, 0))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.tensor([ids] * n, dtype=torch.long, device=device)  # (N, T)
    attention = torch.ones_like(input_ids)  # (N, T): one prompt, so no padding
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (N, T)
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=device)
    eos_set = set(eos.tolist())
    from transformers import DynamicCache

    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=positions,
        past_key_values=DynamicCache(),
        use_cache=True,
        logits_to_keep=1,
    )
    next_pos = positions[:, -1:] + 1  # (N, 1)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    texts = [_Detokenizer(tokenizer) for _ in range(n)]
    reported = [False] * n
    for t in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()  # (N, V)
        if temperature <= 0:
            token = logits.argmax(dim=-1)
        else:
            filtered = _filter_top_p(logits / temperature, top_p)
            probs = torch.softmax(filtered, dim=-1)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        token = torch.where(done, torch.full_like(token, pad), token)
        was_done = done.clone()
        done |= torch.isin(token, eos)
        last_step = bool(done.all()) or t == max_new_tokens - 1
        for i, value in enumerate(token.tolist()):
            if bool(was_done[i]):
                continue
            piece = texts[i].push(value)
            if piece:
                yield TextDelta(i, piece)
            if bool(done[i]) or last_step:
                yield from _finish(i, texts[i], eos_set)
                reported[i] = True
        if last_step:
            break
        attention = torch.cat([attention, attention.new_ones(n, 1)], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=attention,
            position_ids=next_pos,
            past_key_values=out.past_key_values,
            use_cache=True,
        )
        next_pos = next_pos + 1
    for i in range(n):  # max_new_tokens < 1: nothing was sampled
        if not reported[i]:
            yield from _finish(i, texts[i], eos_set)


def _finish(index: int, text: _Detokenizer, eos: set[int]) -> Iterator[StreamEvent]:
    rest, whole = text.finish()
    if rest:
        yield TextDelta(index, rest)
    finished = bool(text.ids) and text.ids[-1] in eos
    yield Finished(index, finished, len(text.ids), whole)
