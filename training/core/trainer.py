"""The DPO training loop: reference log-probs once, then policy updates, then a version on disk."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpointing import disable_checkpointing, enable_checkpointing
from .compiling import compile_model, uncompile
from .config import DPOConfig
from .data import PreferencePair, TokenizedPair, make_batches, split_heldout, tokenize_pairs
from .distributed import setup
from .loading import base_of, load_model, resolve_spec
from .logprobs import build_batch, completion_logps, share_prompt_for
from .losses import preference_loss
from .optim import linear_schedule, make_optimizer
from .precision import MasterWeights, autocast, cast_parameters, resolve_precision, weight_dtype
from .steps import label_smoothing, micro_step, step_metrics, summarise
from .versions import write_version

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, float, float | None], None]
"""``callback(step, total, loss, eta_s)`` after every optimizer step."""


@dataclass
class TrainResult:
    """What a run did and measured; ``to_dict()`` is what ``metrics.json`` holds."""

    version_dir: str
    steps: int
    pairs_trained: int  # pair forward/backward passes (pairs x epochs, capped by max_steps)
    train_seconds: float  # the update loop only, without loading or reference passes
    total_seconds: float
    pairs_per_s: float
    tokens_per_s: float
    peak_memory_bytes: int  # peak RSS on CPU, peak allocated memory on CUDA
    final: dict[str, float]  # metrics of the last optimizer step
    run: dict[str, float]  # metrics averaged over all steps
    heldout_before: dict[str, float] | None
    heldout_after: dict[str, float] | None
    history: list[dict[str, float]] = field(default_factory=list)
    num_train_pairs: int = 0
    num_heldout_pairs: int = 0
    reference: str = ""
    precision: str = ""  # the run's precision, "auto" resolved
    num_processes: int = 1  # data-parallel ranks the run was trained on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad or 0)


def _eval_batches(pairs: Sequence[TokenizedPair], config: DPOConfig) -> list[list[TokenizedPair]]:
    return make_batches(pairs, config.eval_batch_size, bucket=True, shuffle=False, seed=0)


@torch.inference_mode()
def _sequence_logps(
    model: Any,
    pairs: Sequence[TokenizedPair],
    config: DPOConfig,
    pad_id: int,
    device: torch.device,
    precision: str = "fp32",
) -> list[tuple[float, float]]:
    """(chosen, rejected) summed log-probs of each pair, in the order given."""
    results: dict[int, tuple[float, float]] = {}
    index = {id(p): i for i, p in enumerate(pairs)}
    for group in _eval_batches(pairs, config):
        share = share_prompt_for(model, group, config.share_prompt)
        batch = build_batch(group, pad_id, share).to(device)
        with autocast(precision, device):
            logps = completion_logps(model, batch, config.chunked_logprobs).float().cpu()
        b = len(group)
        for j, pair in enumerate(group):
            results[index[id(pair)]] = (float(logps[j]), float(logps[b + j]))
    return [results[i] for i in range(len(pairs))]


def _pair_metrics(
    policy: Sequence[tuple[float, float]], pairs: Sequence[TokenizedPair], config: DPOConfig
) -> dict[str, float]:
    """Loss and implicit-reward metrics of a set of pairs, from precomputed log-probs."""
    pc = torch.tensor([c for c, _ in policy])
    pr = torch.tensor([r for _, r in policy])
    rc = torch.tensor([p.ref_chosen_logp for p in pairs], dtype=torch.float32)
    rr = torch.tensor([p.ref_rejected_logp for p in pairs], dtype=torch.float32)
    out = preference_loss(
        pc,
        pr,
        rc,
        rr,
        loss=config.loss,
        beta=config.beta,
        epsilon=config.epsilon,
        chosen_lengths=torch.tensor([len(p.chosen_ids) for p in pairs], dtype=torch.float32),
        rejected_lengths=torch.tensor([len(p.rejected_ids) for p in pairs], dtype=torch.float32),
        weights=torch.tensor([p.weight for p in pairs]),
        label_smoothing=label_smoothing(pairs),
    )
    return summarise(out.loss, out.chosen_rewards, out.rejected_rewards, pc, pr)


def lora_config(config: DPOConfig) -> Any:
    """The peft LoraConfig of ``config``'s adapter; the benchmark hands the same one to TRL."""
    # peft (and the transformers modules under it) load only when a LoRA run needs them
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def _add_lora(model: Any, config: DPOConfig) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, lora_config(config))


def _reference_disabled(model: Any) -> contextlib.AbstractContextManager[Any]:
    """Run the base model under a LoRA policy: the adapter switched off, no weight copy."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def _batches_forever(
    pairs: Sequence[TokenizedPair], config: DPOConfig
) -> Iterator[tuple[int, list[TokenizedPair]]]:
    for epoch in range(config.epochs):
        for group in make_batches(
            pairs,
            config.batch_size,
            bucket=config.length_bucketing,
            shuffle=True,
            seed=config.seed + epoch,
        ):
            yield epoch, group


def _spec_str(spec: str | Path) -> str:
    text = str(spec)
    if text == "demo":
        return text
    path = Path(text).expanduser()
    return str(path.absolute()) if path.exists() else text


def train_dpo(
    pairs: Sequence[PreferencePair],
    base_spec_or_dir: str | Path,
    out_dir: str | Path,
    config: DPOConfig | None = None,
    progress: ProgressCallback | None = None,
    heldout: Sequence[PreferencePair] | None = None,
    reference_spec: str | Path | None = None,
) -> TrainResult:
    """Train a policy with DPO on ``pairs`` and write it as a version at ``out_dir``.

    Args:
        pairs: training pairs (a held-out split is taken from them unless ``heldout`` is given).
        base_spec_or_dir: the model to start from (see `load_model` for specs).
        out_dir: the version directory to create; it must not exist.
        config: run settings (defaults: `DPOConfig()`).
        progress: ``callback(step, total, loss, eta_s)`` after each optimizer step.
        heldout: pairs to measure before and after training instead of a split of ``pairs``.
        reference_spec: the reference model; by default ``config.reference`` decides.

    Returns:
        `TrainResult` (also saved as the version's ``metrics.json``).
    """
    config = config or DPOConfig()
    started = time.perf_counter()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    par = setup(_device(config.device))
    device = par.device(_device(config.device))
    precision = resolve_precision(config.precision, device)
    dtype = weight_dtype(precision)
    start_spec = _spec_str(base_spec_or_dir)

    if config.loss != "sigmoid" and any(p.label_smoothing for p in [*pairs, *(heldout or [])]):
        raise ValueError(f"pairs with label_smoothing need the sigmoid loss, not {config.loss!r}")
    if heldout is None:
        train_raw, held_raw = split_heldout(pairs, config.heldout_fraction, config.seed)
    else:
        train_raw, held_raw = list(pairs), list(heldout)

    model, tokenizer = load_model(base_spec_or_dir, device=str(device), dtype=dtype)
    cast_parameters(model, dtype)
    pad_id = _pad_id(tokenizer)
    train_pairs = tokenize_pairs(tokenizer, train_raw, config.max_length, config.max_prompt_length)
    held_pairs = tokenize_pairs(tokenizer, held_raw, config.max_length, config.max_prompt_length)
    if not train_pairs:
        raise ValueError("no training pairs left after tokenization and truncation")

    # Reference log-probs, once per run, in inference mode.
    if reference_spec is None:
        reference_spec = start_spec if config.reference == "policy" else base_of(start_spec)
    reference = _spec_str(reference_spec)
    separate_reference = str(resolve_spec(reference)) != str(resolve_spec(start_spec))
    everything = train_pairs + held_pairs
    if separate_reference:
        ref_model, _ = load_model(reference, device=str(device), dtype=dtype)
        cast_parameters(ref_model, dtype)
        ref_logps = par.sharded_map(
            lambda part: _sequence_logps(ref_model, part, config, pad_id, device, precision),
            everything,
        )
        del ref_model
    if config.lora:
        model = _add_lora(model, config)
    if not separate_reference:
        with _reference_disabled(model):
            ref_logps = par.sharded_map(
                lambda part: _sequence_logps(model, part, config, pad_id, device, precision),
                everything,
            )
    for pair, (chosen, rejected) in zip(everything, ref_logps, strict=True):
        pair.ref_chosen_logp, pair.ref_rejected_logp = chosen, rejected

    heldout_before = None
    if held_pairs:
        before = (
            ref_logps[len(train_pairs) :]
            if not separate_reference
            else par.sharded_map(
                lambda part: _sequence_logps(model, part, config, pad_id, device, precision),
                held_pairs,
            )
        )
        heldout_before = _pair_metrics(before, held_pairs, config)

    enable_checkpointing(model, str(config.gradient_checkpointing), config.lora)
    model.train()
    compiled = compile_model(model, config.compile, config.compile_backend)
    params = [p for p in model.parameters() if p.requires_grad]
    par.broadcast_parameters(params)
    if precision == "bf16":
        cast_parameters(model, torch.bfloat16)  # LoRA adapters peft created in float32
    # bf16: the optimizer steps on float32 masters of the bfloat16 weights (see `precision`)
    masters = MasterWeights(params) if precision == "bf16" else None
    opt_params = masters.params if masters is not None else params
    optimizer = make_optimizer(opt_params, config)
    micro_per_epoch = math.ceil(len(train_pairs) / config.batch_size)
    total = math.ceil(micro_per_epoch * config.epochs / config.grad_accum_steps)
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(total, int(config.warmup_ratio * total))
    )

    history: list[dict[str, float]] = []
    step = 0
    pairs_trained = 0
    tokens_trained = 0
    accum: list[dict[str, torch.Tensor]] = []
    loop_start = last_step_end = time.perf_counter()
    micro_batches = list(_batches_forever(train_pairs, config))
    in_step = 0  # global micro-batches since the last optimizer step
    for index, (epoch, group) in enumerate(micro_batches):
        # each rank trains its shard of the global batch (all of it when alone)
        mine = par.shard(group)
        if mine:
            accum.append(
                micro_step(model, mine, len(mine) / len(group), config, pad_id, device, precision)
            )
        in_step += 1
        pairs_trained += len(group)
        tokens_trained += sum(p.pair_tokens for p in group)
        last_micro = index == len(micro_batches) - 1
        if in_step < config.grad_accum_steps and not last_micro:
            continue
        par.sum_gradients(params)
        if masters is not None:
            masters.pull_grads()
        grad_norm = torch.nn.utils.clip_grad_norm_(opt_params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if masters is not None:
            masters.push_weights()
        step += 1
        metrics = step_metrics(accum, in_step, par)
        now = time.perf_counter()
        metrics.update(
            step=step,
            epoch=epoch,
            grad_norm=float(grad_norm),
            learning_rate=float(scheduler.get_last_lr()[0]),
            seconds=now - last_step_end,
        )
        last_step_end = now
        accum = []
        in_step = 0
        history.append(metrics)
        if progress is not None and par.is_main:
            elapsed = time.perf_counter() - loop_start
            eta = elapsed / step * (total - step) if step else None
            progress(step, total, metrics["loss"], eta)
        if step >= total:
            break
    train_seconds = time.perf_counter() - loop_start
    model.eval()
    disable_checkpointing(model, str(config.gradient_checkpointing))
    uncompile(compiled)

    heldout_after = None
    if held_pairs:
        after = par.sharded_map(
            lambda part: _sequence_logps(model, part, config, pad_id, device, precision),
            held_pairs,
        )
        heldout_after = _pair_metrics(after, held_pairs, config)
    if masters is not None:
        # the version keeps the float32 masters, not their bfloat16 rounding
        masters.restore_float32(model)
        del optimizer, masters

    keys = ("loss", "reward_accuracy", "chosen_reward", "rejected_reward", "margin", "chosen_logp")
    run = {k: sum(h[k] for h in history) / len(history) for k in keys}
    peak = (
        int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else peak_rss_bytes()
    )
    result = TrainResult(
        version_dir=str(Path(out_dir).expanduser().absolute()),
        steps=step,
        pairs_trained=pairs_trained,
        train_seconds=train_seconds,
        total_seconds=0.0,
        pairs_per_s=pairs_trained / train_seconds if train_seconds > 0 else 0.0,
        tokens_per_s=tokens_trained / train_seconds if train_seconds > 0 else 0.0,
        peak_memory_bytes=peak,
        final=history[-1] if history else {},
        run=run,
        heldout_before=heldout_before,
        heldout_after=heldout_after,
        history=history,
        num_train_pairs=len(train_pairs),
        num_heldout_pairs=len(held_pairs),
        reference=reference,
        precision=precision,
        num_processes=par.world,
    )
    result.total_seconds = time.perf_counter() - started
    if par.is_main:  # one version, written by rank 0; the others wait until it is in place
        write_version(
            out_dir,
            model,
            tokenizer,
            config=config,
            metrics=result.to_dict(),
            base_model=start_spec,
        )
    par.barrier()
    result.total_seconds = time.perf_counter() - started
    return result
