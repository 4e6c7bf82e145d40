"""Activation checkpointing of the decoder layers: none, full, or selective.

``full`` keeps only each layer's input and recomputes the whole layer in the backward pass
(about one extra forward: a third more compute). ``selective`` keeps the outputs of the
matrix products and attention kernels, the expensive ops, and recomputes only the cheap
element-wise ones between them (norms, rotary embeddings, SiLU and the gating product, casts),
the operator-level policy of Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", sec. 5) as torch's selective checkpointing API expresses it: less
memory than no checkpointing, almost none of the extra compute of full checkpointing.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

from .config import CHECKPOINTING

_ATEN = torch.ops.aten
# Ops whose outputs `selective` keeps; any of them missing from this torch build is skipped.
_SAVED_OP_NAMES = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_flash_attention_forward",
    "_efficient_attention_forward",
)
SAVED_OPS = frozenset(
    getattr(_ATEN, name).default for name in _SAVED_OP_NAMES if hasattr(_ATEN, name)
)


def keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    """The selective policy: save what the ops in `SAVED_OPS` return, recompute the rest."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_kwargs(policy: str) -> dict[str, Any]:
    """Keyword arguments for ``torch.utils.checkpoint.checkpoint`` under ``policy``."""
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if policy == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, keep_matmuls)
    return kwargs


def enable_checkpointing(model: Any, policy: str, lora: bool) -> None:
    """Turn on ``policy`` ("full" or "selective") on a transformers model or its PEFT wrapper."""
    if policy not in CHECKPOINTING:
        raise ValueError(f"gradient_checkpointing must be one of {', '.join(CHECKPOINTING)}")
    if policy == "none":
        return
    kwargs = checkpoint_kwargs(policy)
    # transformers 5 renamed the method and kept the old name as a deprecated alias
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if lora:
        # frozen embeddings give the first checkpointed layer an input without a gradient
        model.enable_input_require_grads()


def disable_checkpointing(model: Any, policy: str) -> None:
    if policy == "none":
        return
    disable = getattr(model, "activation_checkpointing_disable", None)
    if disable is not None:
        disable()
    else:
        model.gradient_checkpointing_disable()
