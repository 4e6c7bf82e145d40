"""One optimizer step's pieces: a micro-batch's forward and backward, the step's metrics.

With data parallelism (see `distributed`) a micro-batch is this rank's shard of the global
batch: its loss is scaled by the shard's share, and the step's metrics gather every shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .config import DPOConfig
from .data import TokenizedPair
from .distributed import Parallel
from .logprobs import build_batch, completion_logps, share_prompt_for
from .losses import preference_loss
from .precision import autocast


def label_smoothing(
    pairs: Sequence[TokenizedPair], device: torch.device | None = None
) -> torch.Tensor | None:
    """``(B,)`` the pairs' label smoothing, or None when no pair has any (hard labels)."""
    if not any(p.label_smoothing for p in pairs):
        return None
    return torch.tensor([p.label_smoothing for p in pairs], dtype=torch.float32, device=device)


def summarise(
    loss: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
) -> dict[str, float]:
    return {
        "loss": float(loss),
        # a tie counts half, as in a win rate: where the policy still equals the reference
        # (round 1's "before") every reward is 0, which is chance, not a wrong answer
        "reward_accuracy": float(
            (
                (chosen_rewards > rejected_rewards).float()
                + 0.5 * (chosen_rewards == rejected_rewards).float()
            ).mean()
        ),
        "chosen_reward": float(chosen_rewards.mean()),
        "rejected_reward": float(rejected_rewards.mean()),
        "margin": float((chosen_rewards - rejected_rewards).mean()),
        # the policy's log-prob of chosen completions: falls under likelihood displacement
        "chosen_logp": float(chosen_logps.float().mean()),
        "rejected_logp": float(rejected_logps.float().mean()),
    }


def micro_step(
    model: Any,
    group: Sequence[TokenizedPair],
    share_of_batch: float,
    config: DPOConfig,
    pad_id: int,
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    """Forward and backward of one micro-batch (or this rank's shard of it).

    The loss is scaled by ``share_of_batch`` (the shard's part of the global micro-batch), so
    that gradients summed over the ranks equal one process's gradients of the whole batch.
    """
    share = share_prompt_for(model, group, config.share_prompt)
    batch = build_batch(group, pad_id, share).to(device)
    b = batch.num_pairs
    ref = torch.tensor(
        [p.ref_chosen_logp for p in group] + [p.ref_rejected_logp for p in group],
        device=device,
    )
    with autocast(precision, device):
        logps = completion_logps(model, batch, config.chunked_logprobs)  # (2B,)
    out = preference_loss(
        logps[:b],
        logps[b:],
        ref[:b],
        ref[b:],
        loss=config.loss,
        beta=config.beta,
        epsilon=config.epsilon,
        chosen_lengths=batch.lengths[:b].float(),
        rejected_lengths=batch.lengths[b:].float(),
        weights=batch.weights,
        label_smoothing=label_smoothing(group, device),
    )
    (out.loss * share_of_batch / config.grad_accum_steps).backward()
    return {
        "loss": out.loss.detach() * share_of_batch,
        "chosen_rewards": out.chosen_rewards,
        "rejected_rewards": out.rejected_rewards,
        "chosen_logps": logps[:b].detach(),
        "rejected_logps": logps[b:].detach(),
    }


def step_metrics(
    accum: list[dict[str, Any]], micro_batches: int, par: Parallel
) -> dict[str, float]:
    """An optimizer step's metrics over the whole global batch, every rank's shard included."""
    keys = ("chosen_rewards", "rejected_rewards", "chosen_logps", "rejected_logps")
    if not par.active:
        loss = torch.stack([a["loss"] for a in accum]).sum() / micro_batches
        return summarise(loss, *(torch.cat([a[k] for a in accum]) for k in keys))
    local = sum((a["loss"].float().cpu() for a in accum), torch.zeros(()))
    loss = par.sum_scalar(local) / micro_batches
    mine = {k: [a[k].float().cpu() for a in accum] for k in keys}
    parts = par.gather(mine)
    tensors = (torch.cat([t for part in parts for t in part[k]]) for k in keys)
    return summarise(loss, *tensors)
