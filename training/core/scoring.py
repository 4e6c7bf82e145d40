"""Log-probabilities of given completions under a model: the scoring half of a KL estimate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .data import Message, TokenizedPair
from .generation import _prompt_ids
from .logprobs import build_batch, completion_logps, share_prompt_for


@torch.inference_mode()
def sequence_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[Message] | str],
    completions: Sequence[list[int]],
    batch_size: int = 8,
) -> list[float]:
    """``log pi(y | x)``, summed over the tokens of each completion ``y`` after its prompt ``x``.

    Prompts are tokenized exactly as `training.core.generation.generate` tokenizes them, and
    completions are the sampled token ids (EOS included when it was sampled), so that scoring
    a sample under the model that drew it gives back its sampling log-probability.
    Completions are scored two at a time per row with their prompt shared, through the same
    chunked log-probability code that DPO training uses.

    Args:
        prompts: one prompt per completion.
        completions: token ids of each completion, none empty.
        batch_size: completions per forward pass.

    Returns:
        One float per completion, in order.
    """
    if len(prompts) != len(completions):
        raise ValueError("one prompt per completion")
    if any(not ids for ids in completions):
        raise ValueError("a completion to score needs at least one token")
    model.eval()
    device = next(model.parameters()).device
    prompt_ids = [_prompt_ids(tokenizer, p) for p in prompts]
    # completions of the same prompt go two to a row (the second scored as the "rejected" side)
    rows: list[tuple[int, int]] = []
    order = sorted(range(len(completions)), key=lambda i: (prompt_ids[i], i))
    k = 0
    while k < len(order):
        first = order[k]
        second = order[k + 1] if k + 1 < len(order) else first
        if prompt_ids[second] != prompt_ids[first]:
            second = first
            k += 1
        else:
            k += 2
        rows.append((first, second))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [0.0] * len(completions)
    per_batch = max(1, batch_size // 2)
    for start in range(0, len(rows), per_batch):
        chunk = rows[start : start + per_batch]
        pairs = [
            TokenizedPair(prompt_ids[a], list(completions[a]), list(completions[b]))
            for a, b in chunk
        ]
        share = share_prompt_for(model, pairs, requested=True)
        batch = build_batch(pairs, pad, share).to(device)
        logps = completion_logps(model, batch).tolist()  # (2B,): firsts, then seconds
        for r, (a, b) in enumerate(chunk):
            out[a] = logps[r]
            out[b] = logps[len(chunk) + r]
    return out
