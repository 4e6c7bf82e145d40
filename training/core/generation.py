"""Sampling completions from a policy, with each completion's log-probability."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import Message
from .loading import load_model


@dataclass
class Sample:
    """One sampled completion."""

    text: str
    token_count: int  # generated tokens, including the final EOS when one was produced
    logprob: float  # sum of log pi(token | context) under the untempered policy
    finished: bool = True  # False when max_new_tokens cut it short
    token_ids: list[int] = field(default_factory=list)  # the sampled ids, EOS included

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "token_count": self.token_count,
            "logprob": self.logprob,
            "finished": self.finished,
            "token_ids": self.token_ids,
        }


@dataclass
class GenerationStats:
    """Timing of the last `generate` call (set on the module for benchmarks and the CLI)."""

    seconds: float = 0.0
    new_tokens: int = 0
    sequences: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


last_stats = GenerationStats()


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def _filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches top_p.

    Args:
        logits: ``(N, V)`` tempered logits.

    Returns:
        ``(N, V)`` logits with the tail set to -inf.
    """
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (N, V)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (N, V)
    drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before >= p
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.inference_mode()
def sample_batch(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    generator: torch.Generator,
) -> list[Sample]:
    """Sample one completion per prompt: left-padded batch, KV cache, stop at EOS.

    The log-probability of each sampled token is read from the untempered distribution before
    temperature and top-p are applied, so it is the policy's own probability of the text.
    """
    device = next(model.parameters()).device
    n = len(prompt_ids)
    width = max(len(p) for p in prompt_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    for i, ids in enumerate(prompt_ids):
        input_ids[i, width - len(ids) :] = torch.tensor(ids)
        attention[i, width - len(ids) :] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (N, T): left padding shifts positions
    eos = torch.tensor(sorted(_eos_ids(model, tokenizer)), device=device)
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    next_pos = positions[:, -1:] + 1  # (N, 1)
    tokens = torch.zeros((n, max_new_tokens), dtype=torch.long, device=device)
    logps = torch.zeros(n, device=device)
    counts = torch.zeros(n, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        logits = out.logits[:, -1, :].float()  # (N, V)
        logprobs = torch.log_softmax(logits, dim=-1)  # (N, V)
        if temperature <= 0:
            token = logits.argmax(dim=-1)
        else:
            filtered = _filter_top_p(logits / temperature, top_p)
            probs = torch.softmax(filtered, dim=-1)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        token = torch.where(done, torch.full_like(token, pad), token)
        tokens[:, t] = token
        logps += torch.where(done, 0.0, logprobs.gather(1, token[:, None]).squeeze(1))
        counts += (~done).long()
        done |= torch.isin(token, eos)
        if bool(done.all()) or t == max_new_tokens - 1:
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
    samples = []
    eos_set = set(eos.tolist())
    for i in range(n):
        ids = tokens[i, : int(counts[i])].tolist()
        finished = bool(ids) and ids[-1] in eos_set
        text = tokenizer.decode(ids, skip_special_tokens=True)
        samples.append(
            Sample(
                text=text,
                token_count=len(ids),
                logprob=float(logps[i]),
                finished=finished,
                token_ids=ids,
            )
        )
    return samples


def _prompt_ids(tokenizer: Any, prompt: list[Message] | str) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    encoded = tokenizer.apply_chat_template(
        prompt, tokenize=True, return_dict=True, add_generation_prompt=True
    )
    return list(encoded["input_ids"])


def generate(
    model_spec_or_dir: str | Path | tuple[Any, Any],
    prompts: Sequence[list[Message] | str],
    k: int = 2,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    seed: int = 0,
    batch_size: int = 8,
) -> list[list[Sample]]:
    """Sample ``k`` completions for each prompt.

    Args:
        model_spec_or_dir: a model spec for `load_model`, or an already loaded
            ``(model, tokenizer)``.
        prompts: message lists (rendered with the chat template) or raw strings.
        k: completions per prompt.
        temperature: softmax temperature; 0 means greedy.
        top_p: nucleus sampling mass.
        max_new_tokens: cap on generated tokens per completion.
        seed: seeds the sampler; same seed, batch size and prompts give the same samples.
        batch_size: sequences per forward pass; prompts of similar length are batched together.

    Returns:
        One list of ``k`` `Sample` per prompt, in the order of ``prompts``.
    """
    if isinstance(model_spec_or_dir, tuple):
        model, tokenizer = model_spec_or_dir
    else:
        model, tokenizer = load_model(model_spec_or_dir)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = [_prompt_ids(tokenizer, p) for p in prompts]
    # every (prompt, sample) slot, sorted by prompt length to cut left padding
    slots = sorted(
        ((i, j) for i in range(len(prompts)) for j in range(k)), key=lambda s: len(ids[s[0]])
    )
    results: list[list[Sample | None]] = [[None] * k for _ in prompts]
    started = time.perf_counter()
    new_tokens = 0
    for start in range(0, len(slots), batch_size):
        chunk = slots[start : start + batch_size]
        samples = sample_batch(
            model,
            tokenizer,
            [ids[i] for i, _ in chunk],
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            generator=generator,
        )
        for (i, j), sample in zip(chunk, samples, strict=True):
            results[i][j] = sample
            new_tokens += sample.token_count
    last_stats.seconds = time.perf_counter() - started
    last_stats.new_tokens = new_tokens
    last_stats.sequences = len(slots)
    return [[s for s in row if s is not None] for row in results]
