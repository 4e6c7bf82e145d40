"""The optimizer and learning-rate schedule of a DPO run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .config import DPOConfig


def make_optimizer(params: Sequence[torch.Tensor], config: DPOConfig) -> torch.optim.Optimizer:
    """AdamW over ``params`` with the kernel ``config.optimizer_impl`` names.

    ``fused`` updates every tensor in one pass over memory; ``foreach`` runs each step of the
    update as one batched kernel over all tensors; ``for-loop`` updates one tensor at a time.
    All three compute the same update up to floating-point rounding.

    Raises:
        ValueError: ``fused`` asked for where this torch build has no fused kernel for the
            parameters' device or dtype.
    """
    kwargs: dict[str, Any] = {"lr": config.effective_lr, "weight_decay": config.weight_decay}
    impl = config.optimizer_impl
    if impl == "fused":
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"optimizer_impl 'fused' is not available here: {exc}") from exc
    if impl in ("foreach", "for-loop"):
        return torch.optim.AdamW(params, foreach=impl == "foreach", **kwargs)
    # auto: fused where torch has the kernel (CUDA, and CPU since torch 2.4), else its default
    with contextlib.suppress(RuntimeError, TypeError):
        return torch.optim.AdamW(params, fused=True, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def linear_schedule(total: int, warmup: int) -> Callable[[int], float]:
    """LambdaLR factor: linear warm-up over ``warmup`` steps, then linear decay to 0 at
    ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor
