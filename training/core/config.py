"""The one configuration object for a DPO run, stored inside every model version."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

LOSSES = ("sigmoid", "ipo", "hinge", "robust")
REFERENCES = ("base", "policy")
# The values of `precision`, `gradient_checkpointing` and `optimizer_impl`; kept here (not
# beside the code that implements them) so that the web process validates them without torch.
PRECISIONS = ("auto", "fp32", "bf16-autocast", "bf16")
CHECKPOINTING = ("none", "full", "selective")
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "for-loop")
COMPILE_MODES = ("none", "layers", "model")
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")
# The fields whose value is one of a fixed list, with that list (for forms and schemas).
CHOICES = {
    "loss": LOSSES,
    "reference": REFERENCES,
    "precision": PRECISIONS,
    "gradient_checkpointing": CHECKPOINTING,
    "optimizer_impl": OPTIMIZER_IMPLS,
    "compile": COMPILE_MODES,
    "compile_backend": COMPILE_BACKENDS,
}


@dataclass
class DPOConfig:
    """Everything that decides what a DPO run computes.

    Saved as ``training_config.json`` in each version directory, so a version always says how it
    was made. Defaults suit a small model fine-tuned on a CPU from a few dozen to a few thousand
    pairs.
    """

    # Which preference loss: "sigmoid" (DPO), "ipo", "hinge" (SLiC) or "robust" (label flips).
    loss: str = "sigmoid"
    # Strength of the KL tie to the reference; 0.1 is the value used in the DPO paper.
    beta: float = 0.1
    # Assumed rate of flipped labels for the robust loss; must lie in [0, 0.5).
    epsilon: float = 0.1
    # AdamW step size; 5e-6 suits full fine-tuning, LoRA runs raise it (see `effective_lr`).
    learning_rate: float = 5e-6
    # Learning rate used instead of `learning_rate` when LoRA is on: adapters need larger steps.
    lora_learning_rate: float = 5e-5
    # AdamW weight decay; zero keeps the policy close to where it started.
    weight_decay: float = 0.0
    # Linear warm-up, as a fraction of all optimizer steps; the rate then decays linearly to 0.
    warmup_ratio: float = 0.1
    # Gradients are clipped to this global norm; 1.0 is the usual guard against spikes.
    max_grad_norm: float = 1.0
    # Passes over the training pairs.
    epochs: int = 1
    # Stop after this many optimizer steps even if epochs remain; None means no cap.
    max_steps: int | None = None
    # Pairs per forward pass (each pair is one chosen and one rejected completion).
    batch_size: int = 4
    # Micro-batches whose gradients add up to one optimizer step.
    grad_accum_steps: int = 1
    # Longest prompt + completion in tokens; longer completions are cut at the end.
    max_length: int = 512
    # Longest prompt in tokens; longer prompts keep their last tokens (the end of the conversation).
    max_prompt_length: int = 256
    # Train a LoRA adapter instead of all weights: on a CPU this is the only practical choice.
    lora: bool = True
    # LoRA rank.
    lora_r: int = 16
    # LoRA scale numerator (the update is scaled by alpha / r).
    lora_alpha: int = 32
    # Dropout inside LoRA layers; off, because noise between the chosen and rejected passes
    # only adds variance to their log-ratio.
    lora_dropout: float = 0.0
    # Module names to adapt; the attention and MLP projections of Llama-style models.
    lora_target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    # Activation checkpointing of the decoder layers: "none"; "full" keeps only each layer's
    # input and recomputes the layer in the backward pass (least memory, about a third more
    # compute); "selective" keeps matrix products and attention outputs and recomputes only the
    # element-wise ops between them (see `checkpointing`). True and False, the values of older
    # configs, mean "full" and "none".
    gradient_checkpointing: str | bool = "none"
    # Reference model: "base" (the original model the chain of versions started from) or
    # "policy" (the model this run starts from).
    reference: str = "base"
    # Seed for shuffling, LoRA initialisation and the held-out split; same seed, same result on CPU.
    seed: int = 0
    # Fraction of the pairs kept out of training to measure generalisation (at least one pair
    # when the fraction is above zero and there are two or more pairs).
    heldout_fraction: float = 0.1
    # "auto" picks CUDA when present, else CPU; or name a torch device ("cpu", "cuda:1").
    device: str = "auto"
    # Put chosen and rejected after one shared copy of the prompt in a single row, with an
    # attention mask that hides chosen from rejected: the prompt is encoded once, not twice.
    share_prompt: bool = True
    # Batch pairs of similar length together (batch order still shuffled) to cut padding.
    length_bucketing: bool = True
    # Project to the vocabulary only at completion positions, in chunks, never holding the
    # (B, T, V) logits; False computes a full log-softmax everywhere (kept for measurement).
    chunked_logprobs: bool = True
    # Pairs per forward pass when computing reference and held-out log-probs (no gradients).
    eval_batch_size: int = 8
    # Numeric precision (see `precision`): "fp32"; "bf16-autocast" (float32 weights, bfloat16
    # matmuls under torch.autocast); "bf16" (bfloat16 weights and gradients, the optimizer
    # stepping on float32 master copies). "auto" is fp32 on CPU, where bfloat16 is no faster,
    # and bf16-autocast on CUDA: a default that `bench/bench_train.py --device cuda` must
    # confirm by measurement on the card.
    precision: str = "auto"
    # AdamW kernel: "fused" (one kernel over all tensors), "foreach" (batched per-op kernels),
    # "for-loop" (one tensor at a time, the slowest and the reference); "auto" takes fused
    # where this torch build offers it for the device, torch's own default otherwise.
    optimizer_impl: str = "auto"
    # Data-parallel processes the train task launches for a round (torchrun on the worker, one
    # GPU each on CUDA, gloo on CPU; see `distributed`); 1 trains in the worker's own process.
    # The global batch stays `batch_size` pairs, split between the processes.
    num_processes: int = 1
    # torch.compile for the training passes (see `compiling`): "none"; "layers" compiles each
    # decoder layer on its own (one graph reused by every layer, so compiling takes seconds,
    # not minutes, and a shape change recompiles one small graph); "model" compiles the whole
    # forward. Shapes are marked dynamic: batches of other lengths reuse the graph.
    compile: str = "none"
    # The torch.compile backend: "inductor" (generated kernels, the one that makes training
    # faster), "aot_eager" (traced graphs run by eager kernels: checks the tracing, not speed)
    # or "eager".
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if isinstance(self.gradient_checkpointing, bool):
            self.gradient_checkpointing = "full" if self.gradient_checkpointing else "none"
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}"
                )
        if not 0.0 <= self.epsilon < 0.5:
            raise ValueError(f"epsilon must lie in [0, 0.5), not {self.epsilon}")
        if self.beta <= 0:
            raise ValueError(f"beta must be positive, not {self.beta}")
        for name in (
            "epochs",
            "batch_size",
            "grad_accum_steps",
            "max_length",
            "eval_batch_size",
            "num_processes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, not {self.max_steps}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must lie in [0, 1), not {self.heldout_fraction}")

    @property
    def effective_lr(self) -> float:
        """The learning rate the optimizer uses: the LoRA one when LoRA is on."""
        return self.lora_learning_rate if self.lora else self.learning_rate

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPOConfig:
        """Build a config from `to_dict` output; unknown keys are an error, missing keys default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DPOConfig field(s): {', '.join(unknown)}")
        return cls(**data)
