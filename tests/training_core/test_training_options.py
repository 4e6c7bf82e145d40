"""Activation checkpointing policies, AdamW kernels and the validation of these options."""

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from training.core import DPOConfig, train_dpo
from training.core.checkpointing import enable_checkpointing
from training.core.data import tokenize_pairs
from training.core.logprobs import build_batch, completion_logps

from .conftest import build_model, dpo_config


class _CountOps(TorchDispatchMode):
    """Counts the aten ops that run while it is active."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _backward_ops(tiny_tokenizer, pairs, policy):
    model = build_model(tiny_tokenizer)
    model.train()
    enable_checkpointing(model, policy, lora=False)
    batch = build_batch(tokenize_pairs(tiny_tokenizer, pairs, 512, 256), 0, share_prompt=True)
    logps = completion_logps(model, batch)
    counter = _CountOps()
    with counter:
        logps.sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logps.detach(), grads, counter.counts


def test_selective_checkpointing_recomputes_the_cheap_ops_and_no_matmul(tiny_tokenizer, pairs):
    logps, grads, none = _backward_ops(tiny_tokenizer, pairs, "none")
    results = {p: _backward_ops(tiny_tokenizer, pairs, p) for p in ("full", "selective")}
    for policy, (other_logps, other_grads, _) in results.items():
        assert torch.allclose(other_logps, logps), policy
        assert torch.allclose(other_grads, grads, atol=1e-6), policy
    full, selective = results["full"][2], results["selective"][2]
    attention = "_scaled_dot_product_flash_attention_for_cpu"
    # full recomputes each layer: its matrix products and attention run again in the backward
    assert full["mm"] > none["mm"] and full[attention] > none[attention]
    # selective keeps those outputs and recomputes only element-wise ops (SiLU, RMSNorm)
    assert selective["mm"] == none["mm"] and selective[attention] == none[attention]
    assert selective["silu"] > none["silu"] and selective["rsqrt"] > none["rsqrt"]


def _config(**overrides):
    return dpo_config(**overrides)


@pytest.fixture(scope="module")
def baseline(tiny_model_dir, tmp_path_factory):
    """Losses of a run with no checkpointing and the default (fused) AdamW."""
    from training.core.data import pair_from_row

    from .conftest import make_pair_rows

    pairs = [pair_from_row(row) for row in make_pair_rows()]
    result = train_dpo(pairs, tiny_model_dir, tmp_path_factory.mktemp("base") / "v", _config())
    return [h["loss"] for h in result.history]


@pytest.mark.parametrize(
    "overrides",
    [
        {"gradient_checkpointing": "selective"},
        {"optimizer_impl": "foreach"},
        {"optimizer_impl": "for-loop"},
        {"optimizer_impl": "fused", "gradient_checkpointing": "selective"},
    ],
    ids=["selective", "foreach", "for-loop", "fused-selective"],
)
def test_training_options_give_the_same_losses(
    tiny_model_dir, pairs, tmp_path, baseline, overrides
):
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "v", _config(**overrides))
    assert [h["loss"] for h in result.history] == pytest.approx(baseline, rel=1e-4, abs=1e-5)


def test_selective_checkpointing_under_lora_gives_the_same_losses(tiny_model_dir, pairs, tmp_path):
    losses = {}
    for policy in ("none", "selective"):
        config = _config(lora=True, gradient_checkpointing=policy)
        result = train_dpo(pairs, tiny_model_dir, tmp_path / policy, config)
        losses[policy] = [h["loss"] for h in result.history]
    assert losses["none"][-1] < losses["none"][0]
    assert losses["selective"] == pytest.approx(losses["none"], rel=1e-4, abs=1e-5)


def test_older_boolean_checkpointing_maps_to_a_policy():
    assert DPOConfig(gradient_checkpointing=True).gradient_checkpointing == "full"
    assert DPOConfig.from_dict({"gradient_checkpointing": False}).gradient_checkpointing == "none"
    assert DPOConfig().to_dict()["gradient_checkpointing"] == "none"


@pytest.mark.parametrize(
    "field, value",
    [
        ("precision", "fp16"),
        ("gradient_checkpointing", "some"),
        ("optimizer_impl", "apex"),
    ],
)
def test_unknown_option_values_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be one of"):
        DPOConfig(**{field: value})
