import json

import pytest
import torch

from training.core import (
    IncompleteVersionError,
    generate,
    load_model,
    load_version,
    train_dpo,
)
from training.core import versions as versions_module

from .conftest import dpo_config


def _fast_config(**overrides):
    return dpo_config(**{"lora_learning_rate": 5e-2, "epochs": 6, **overrides})


def test_training_raises_reward_accuracy_and_changes_parameters(tiny_model_dir, pairs, tmp_path):
    steps = []
    result = train_dpo(
        pairs,
        tiny_model_dir,
        tmp_path / "v1",
        _fast_config(),
        progress=lambda step, total, loss, eta: steps.append((step, total, loss, eta)),
    )
    history = result.history
    assert history[0]["reward_accuracy"] <= 0.5
    assert history[-1]["reward_accuracy"] == 1.0
    assert history[-1]["loss"] < history[0]["loss"]
    assert [s[0] for s in steps] == list(range(1, result.steps + 1))
    assert all(s[1] == result.steps for s in steps)
    before, _ = load_model(tiny_model_dir)
    after, _ = load_model(tmp_path / "v1")
    changed = [
        name
        for (name, p), q in zip(before.named_parameters(), after.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert len(changed) == len(list(before.parameters()))


def test_lora_changes_only_the_adapter(tiny_model_dir, pairs, tmp_path):
    config = _fast_config(
        lora=True, lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"]
    )
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "v1", config)
    assert result.history[-1]["reward_accuracy"] > result.history[0]["reward_accuracy"]
    version = load_version(tmp_path / "v1")
    assert version.kind == "lora"
    files = {p.name for p in (tmp_path / "v1").iterdir()}
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files

    from peft import PeftModel

    base, _ = load_model(tiny_model_dir)
    reference = {n: p.clone() for n, p in base.named_parameters()}
    wrapped = PeftModel.from_pretrained(base, tmp_path / "v1")
    for name, param in wrapped.named_parameters():
        if "lora_" in name:
            continue
        original = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(param, reference[original]), name
    lora_b = [p for n, p in wrapped.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)


def test_same_seed_gives_the_same_result_on_cpu(tiny_model_dir, pairs, tmp_path):
    config = _fast_config(epochs=2)
    a = train_dpo(pairs, tiny_model_dir, tmp_path / "a", config)
    b = train_dpo(pairs, tiny_model_dir, tmp_path / "b", config)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_heldout_metrics_before_and_after(tiny_model_dir, pairs, tmp_path):
    result = train_dpo(
        pairs, tiny_model_dir, tmp_path / "v", _fast_config(heldout_fraction=0.25, loss="ipo")
    )
    assert result.num_heldout_pairs == 2 and result.num_train_pairs == 6
    assert result.heldout_before is not None and result.heldout_after is not None
    assert result.heldout_before["margin"] == pytest.approx(0.0, abs=1e-5)
    assert result.heldout_after["chosen_logp"] != result.heldout_before["chosen_logp"]
    saved = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert saved["heldout_after"] == result.heldout_after


@pytest.mark.parametrize("loss", ["hinge", "robust"])
def test_other_losses_train(tiny_model_dir, pairs, tmp_path, loss):
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "v", _fast_config(loss=loss, epochs=3))
    assert result.steps == 6 and result.pairs_per_s > 0 and result.tokens_per_s > 0


def test_grad_accumulation_and_max_steps(tiny_model_dir, pairs, tmp_path):
    config = _fast_config(batch_size=2, grad_accum_steps=2, max_steps=3)
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "v", config)
    assert result.steps == 3 and result.pairs_trained == 12


def test_gradient_checkpointing_gives_the_same_losses(tiny_model_dir, pairs, tmp_path):
    plain = train_dpo(pairs, tiny_model_dir, tmp_path / "a", _fast_config(epochs=2))
    ckpt = train_dpo(
        pairs, tiny_model_dir, tmp_path / "b", _fast_config(epochs=2, gradient_checkpointing=True)
    )
    assert [h["loss"] for h in plain.history] == pytest.approx([h["loss"] for h in ckpt.history])


def test_written_version_loads_and_generates(tiny_model_dir, pairs, tmp_path):
    train_dpo(pairs, tiny_model_dir, tmp_path / "v1", _fast_config(epochs=1))
    version = load_version(tmp_path / "v1", verify=True)
    assert version.kind == "full" and version.config == _fast_config(epochs=1)
    assert version.metrics["steps"] == 2
    samples = generate(
        tmp_path / "v1", [[{"role": "user", "content": "Hi"}]], k=2, max_new_tokens=5
    )
    assert len(samples) == 1 and len(samples[0]) == 2


def test_a_crash_mid_write_leaves_no_version(tiny_model_dir, pairs, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(versions_module, "_fsync_tree", crash)
    with pytest.raises(OSError, match="disk full"):
        train_dpo(pairs, tiny_model_dir, tmp_path / "v1", _fast_config(epochs=1))
    assert list(tmp_path.iterdir()) == []


def test_a_directory_without_manifest_is_not_a_version(tiny_model_dir):
    with pytest.raises(IncompleteVersionError):
        load_version(tiny_model_dir)


def test_it_refuses_to_overwrite_a_version(tiny_model_dir, pairs, tmp_path):
    (tmp_path / "v1").mkdir()
    with pytest.raises(FileExistsError):
        train_dpo(pairs, tiny_model_dir, tmp_path / "v1", _fast_config(epochs=1))


def test_training_from_a_lora_version_chains_to_the_base(tiny_model_dir, pairs, tmp_path):
    config = _fast_config(lora=True, epochs=1)
    train_dpo(pairs, tiny_model_dir, tmp_path / "v1", config)
    result = train_dpo(pairs, tmp_path / "v1", tmp_path / "v2", config)
    assert result.reference == str(tiny_model_dir)
    assert load_version(tmp_path / "v2").base_model == str(tmp_path / "v1")
    model, _ = load_model(tmp_path / "v2")
    assert not hasattr(model, "peft_config")
