"""Sampling completions from a policy, with each completion's log-probability."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
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
    # log pi of each sampled token (untempered), in the order of ``token_ids``
    token_logprobs: list[float] = field(default_factory=list)

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


def _draw(
    probs: torch.Tensor, generator: torch.Generator | Sequence[tuple[torch.Generator, slice]]
) -> torch.Tensor:
    """One token per row of ``probs`` (N, V) -> (N,)."""
    if isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    parts = [torch.multinomial(probs[rows], 1, generator=g) for g, rows in generator]
    return torch.cat(parts).squeeze(1)


@torch.inference_mode()
def sample_batch(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[list[int]],
    *,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    generator: torch.Generator | Sequence[tuple[torch.Generator, slice]],
) -> list[Sample]:
    """Sample one completion per prompt: left-padded batch, KV cache, stop at EOS.

    ``generator`` draws every row's tokens, or is a list of (generator, rows): each generator
    draws the tokens of its slice of rows, exactly as it would in a batch of those rows alone
    (up to float rounding of the batched forward pass).

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
    step_logps = torch.zeros((n, max_new_tokens), device=device)
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
            token = _draw(probs.cpu(), generator).to(device)
        token = torch.where(done, torch.full_like(token, pad), token)
        tokens[:, t] = token
        step = torch.where(done, 0.0, logprobs.gather(1, token[:, None]).squeeze(1))
        step_logps[:, t] = step
        logps += step
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
                token_logprobs=step_logps[i, : len(ids)].tolist(),
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


@dataclass
class Batch:
    """One forward batch of `generate_batches`: what it sampled and how far the call is."""

    # (prompt index, sample index, sample) for each sequence of the batch
    samples: list[tuple[int, int, Sample]]
    # prompts whose ``k`` samples are all in now, each with its samples in sample order
    completed: dict[int, list[Sample]]
    sequences_done: int  # sequences sampled so far by this call
    sequences_total: int  # sequences this call samples (skipped prompts left out)
    new_tokens: int  # tokens generated so far by this call
    seconds: float  # since the call started

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far; None before the first sequence."""
        if not self.sequences_done:
            return None
        left = self.sequences_total - self.sequences_done
        return self.seconds / self.sequences_done * left


def _group_seed(seed: int, group: int) -> int:
    # distinct (seed, group) give distinct generator seeds (seed + group would not)
    return (seed * 1_000_003 + group) % (2**63)


def generate_batches(
    model_spec_or_dir: str | Path | tuple[Any, Any],
    prompts: Sequence[list[Message] | str],
    k: int = 2,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new_tokens: int = 128,
    seed: int = 0,
    batch_size: int = 8,
    skip: Collection[int] = (),
) -> Iterator[Batch]:
    """Sample ``k`` completions for each prompt, yielding each forward batch as it is done.

    Prompts are sorted by length (less left padding) and cut into groups of
    ``max(1, batch_size // k)``; a group's ``k`` samples per prompt are drawn together, with a
    generator seeded from ``seed`` and the group's position. A prompt's samples therefore depend
    only on the seed, the prompt list and the batch size, not on which groups were sampled
    before: a stopped run resumed with ``skip`` (indices of prompts already done) draws the rest
    exactly as an uninterrupted run would. Groups made only of skipped prompts are not sampled;
    skipped prompts in a sampled group are sampled again but not reported.

    Args: as `generate`, plus ``skip``.
    """
    if isinstance(model_spec_or_dir, tuple):
        model, tokenizer = model_spec_or_dir
    else:
        model, tokenizer = load_model(model_spec_or_dir)
    model.eval()
    ids = [_prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
    per_group = max(1, batch_size // k)
    groups = [order[start : start + per_group] for start in range(0, len(order), per_group)]
    skipped = set(skip)
    total = k * sum(1 for i in range(len(prompts)) if i not in skipped)
    started = time.perf_counter()
    done = new_tokens = 0
    for number, group in enumerate(groups):
        if all(i in skipped for i in group):
            continue
        generator = torch.Generator().manual_seed(_group_seed(seed, number))
        slots = [(i, j) for i in group for j in range(k)]
        found: dict[int, list[Sample | None]] = {i: [None] * k for i in group}
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
            reported: list[tuple[int, int, Sample]] = []
            for (i, j), sample in zip(chunk, samples, strict=True):
                found[i][j] = sample
                if i not in skipped:
                    reported.append((i, j, sample))
                    new_tokens += sample.token_count
            done += len(reported)
            last = start + batch_size >= len(slots)
            completed = (
                {i: [s for s in found[i] if s is not None] for i in group if i not in skipped}
                if last
                else {}
            )
            yield Batch(
                samples=reported,
                completed=completed,
                sequences_done=done,
                sequences_total=total,
                new_tokens=new_tokens,
                seconds=time.perf_counter() - started,
            )


def generate_seeded(
    model: tuple[Any, Any],
    prompts: Sequence[list[Message] | str],
    seeds: Sequence[int],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int = 8,
) -> Iterator[dict[int, list[Sample]]]:
    """``k`` completions for each prompt, each prompt drawn with a generator of its own seed;
    yields each forward batch's prompts (index -> samples) as soon as they are sampled.

    A prompt's samples are those of ``generate(model, [prompt], k=k, seed=seed,
    batch_size=k)`` whatever other prompts share its forward batches (up to float rounding),
    so a (model, prompt, seed) can be cached and compared across calls; prompts of similar
    length are still sampled ``max(1, batch_size // k)`` at a time.
    """
    loaded, tokenizer = model
    loaded.eval()
    ids = [_prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
    per_batch = max(1, batch_size // k)
    for start in range(0, len(order), per_batch):
        group = order[start : start + per_batch]
        generators = [
            (torch.Generator().manual_seed(_group_seed(seeds[i], 0)), slice(n * k, (n + 1) * k))
            for n, i in enumerate(group)
        ]
        samples = sample_batch(
            loaded,
            tokenizer,
            [ids[i] for i in group for _ in range(k)],
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            generator=generators,
        )
        yield {i: samples[n * k : (n + 1) * k] for n, i in enumerate(group)}


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
    results: list[list[Sample]] = [[] for _ in prompts]
    batch: Batch | None = None
    for batch in generate_batches(
        model_spec_or_dir,
        prompts,
        k=k,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
    ):
        for i, samples in batch.completed.items():
            results[i] = samples
    last_stats.seconds = batch.seconds if batch else 0.0
    last_stats.new_tokens = batch.new_tokens if batch else 0
    last_stats.sequences = batch.sequences_done if batch else 0
    return results
