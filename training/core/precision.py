"""Numeric precision of a training run: which dtype the weights live in, where autocast runs,
and the fp32 master weights the optimizer steps on when the model itself is in bfloat16.

The three settings (``DPOConfig.precision``):

``fp32``
    Weights, activations, gradients and optimizer state in float32.
``bf16-autocast``
    Weights, gradients and optimizer state in float32; matrix products run in bfloat16 under
    ``torch.autocast`` (activations mostly bfloat16). Memory of the weights is unchanged; the
    matmuls use the bfloat16 tensor cores.
``bf16``
    The model's parameters are bfloat16 (forward, backward and gradients in bfloat16, no
    autocast), and the optimizer steps on float32 master copies (Micikevicius et al. 2018,
    "Mixed Precision Training", sec. 3.1): after each backward the bfloat16 gradients are copied
    into the masters' float32 gradients, clipping and AdamW run there, and the updated masters
    are rounded back into the model. Without masters an update smaller than half a bfloat16 ulp
    (about 2**-9 of the weight: most updates at a learning rate of 5e-6) would round away.
    Per trainable parameter at the optimizer step: 2 (weight) + 4 (master) + 4 (its float32
    gradient, which replaces the 2-byte bfloat16 one) + 8 (AdamW moments) = 18 bytes, as much
    as ``bf16-autocast`` holds (4 + 4 + 8, plus the bfloat16 weight copies autocast keeps for
    the backward). What it saves is activation memory and time: every activation is bfloat16
    (autocast leaves the residual stream and the norms in float32) and no weight is cast per
    step. LoRA adapters, which peft creates in float32, are cast to bfloat16 like the rest and
    get masters too. The version written at the end holds the float32 masters, not their
    bfloat16 rounding. Buffers (rotary frequencies) stay float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .config import PRECISIONS

# What "auto" means on a CUDA device: to be confirmed by measurement on the card
# (`bench/bench_train.py --device cuda` runs fp32, bf16-autocast and bf16 side by side). One
# H100 measurement (SmolLM2-135M architecture, batch 16), taken while the chunked head still
# recomputed in float32 what its forward had computed in bfloat16, had autocast slower than fp32.
CUDA_DEFAULT = "bf16-autocast"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The concrete precision of a run: ``auto`` is ``fp32`` on CPU (bfloat16 matmuls are not
    faster there) and `CUDA_DEFAULT` on CUDA; other values are returned unchanged."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return precision
    return CUDA_DEFAULT if device.type == "cuda" else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a forward pass under ``precision`` (resolved)."""
    if precision == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype the model's parameters are kept in under ``precision`` (resolved)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def cast_parameters(model: Any, dtype: torch.dtype) -> Any:
    """Cast ``model``'s floating-point parameters (not its buffers) to ``dtype``, in place.

    ``model.to(dtype)`` would also round the float32 rotary ``inv_freq`` buffers, which shifts
    the positions of long sequences; loading with ``dtype=`` leaves them in float32, and so
    does this.
    """
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
    return model


class MasterWeights:
    """float32 master copies of a model's trainable parameters, for the ``bf16`` precision.

    The optimizer is built over `params`; each optimizer step is bracketed by `pull_grads`
    (model gradients -> master gradients) and `push_weights` (masters -> model weights).
    """

    def __init__(self, model_params: list[torch.nn.Parameter]) -> None:
        self.model_params = model_params
        self.params: list[torch.Tensor] = []
        for p in model_params:
            if p.dtype == torch.float32:
                self.params.append(p)
            else:
                master = p.detach().to(torch.float32).clone()
                master.requires_grad_(True)
                self.params.append(master)

    def pull_grads(self) -> None:
        """Move the model's gradients onto the masters as float32, freeing the model's."""
        for p, master in zip(self.model_params, self.params, strict=True):
            if master is p:
                continue
            master.grad = None if p.grad is None else p.grad.to(torch.float32)
            p.grad = None

    @torch.no_grad()
    def push_weights(self) -> None:
        """Round the updated masters into the model's parameters (one batched copy)."""
        pairs = [(p, m) for p, m in zip(self.model_params, self.params, strict=True) if m is not p]
        if pairs:
            torch._foreach_copy_([p for p, _ in pairs], [m for _, m in pairs])

    @torch.no_grad()
    def restore_float32(self, model: Any) -> None:
        """Give ``model`` float32 parameters: the masters where there are masters, the others
        cast up (frozen base weights under LoRA, which the version does not write)."""
        for p, master in zip(self.model_params, self.params, strict=True):
            p.data = master.detach() if master is not p else p.data
        cast_parameters(model, torch.float32)
