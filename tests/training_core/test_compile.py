"""torch.compile as a training option: same losses as eager, compiled only while training."""

import pytest
import torch

from training.core import DPOConfig, train_dpo
from training.core.compiling import compile_model, decoder_layers, is_compiled, uncompile
from training.core.data import tokenize_pairs
from training.core.loading import load_model
from training.core.logprobs import build_batch, completion_logps

from .conftest import build_model, dpo_config


def _config(**overrides):
    return dpo_config(**overrides)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_layers_mode_compiles_each_decoder_layer_and_keeps_the_numbers(tiny_tokenizer, pairs):
    eager = build_model(tiny_tokenizer)
    compiled = build_model(tiny_tokenizer)
    batch = build_batch(tokenize_pairs(tiny_tokenizer, pairs, 512, 256), 0, share_prompt=True)
    done = compile_model(compiled, "layers", backend="aot_eager")
    assert done == decoder_layers(compiled) and all(is_compiled(layer) for layer in done)
    counters = torch._dynamo.utils.counters
    before = counters["stats"]["unique_graphs"]
    got = completion_logps(compiled, batch)
    assert counters["stats"]["unique_graphs"] > before  # dynamo traced the layers
    assert torch.allclose(got, completion_logps(eager, batch), atol=1e-5)
    got.sum().backward()
    uncompile(done)
    assert not any(is_compiled(layer) for layer in done)
    # compiling in place keeps the parameter names a saved version is loaded by
    assert list(compiled.state_dict()) == list(eager.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"compile": "model"},
        {"compile": "layers", "gradient_checkpointing": "full"},
        {"compile": "layers", "lora": True},
    ],
    ids=["model", "layers-full-checkpointing", "layers-lora"],
)
def test_compiled_training_gives_the_losses_of_eager_training(
    tiny_model_dir, pairs, tmp_path, overrides
):
    eager_overrides = {k: v for k, v in overrides.items() if k != "compile"}
    eager = train_dpo(pairs, tiny_model_dir, tmp_path / "eager", _config(**eager_overrides))
    config = _config(compile_backend="aot_eager", **overrides)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "compiled", config)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > graphs
    losses = [h["loss"] for h in result.history]
    assert losses == pytest.approx([h["loss"] for h in eager.history], rel=1e-4, abs=1e-5)
    assert losses[-1] < losses[0]
    # the saved version loads as any other and holds the trained weights
    model, _ = load_model(tmp_path / "compiled", device="cpu")
    reference, _ = load_model(tmp_path / "eager", device="cpu")
    for (name, got), (_, want) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.allclose(got, want, atol=1e-4), name


@pytest.mark.slow
def test_inductor_compiles_and_trains_on_this_cpu(tiny_model_dir, pairs, tmp_path):
    """The backend that makes training faster, end to end (generated C++ kernels on a CPU)."""
    eager = train_dpo(pairs, tiny_model_dir, tmp_path / "eager", _config(epochs=1))
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "ind", _config(epochs=1, compile="layers"))
    losses = [h["loss"] for h in result.history]
    assert losses == pytest.approx([h["loss"] for h in eager.history], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("field, value", [("compile", "full"), ("compile_backend", "tvm")])
def test_unknown_compile_options_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be one of"):
        DPOConfig(**{field: value})
