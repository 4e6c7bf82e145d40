"""Precision options: the chunked head under bf16 against an fp32 reference, master weights,
and training runs in each precision."""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from training.core import load_model, train_dpo
from training.core.data import tokenize_pairs
from training.core.logprobs import _ChunkedLabelLogProb, build_batch, completion_logps
from training.core.precision import MasterWeights, cast_parameters, resolve_precision

from .conftest import build_model, dpo_config


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _head_grads(fn, hidden, weight, labels, autocast: bool):
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = fn(h, w, labels)
    (out * torch.linspace(-1, 1, out.shape[0])).sum().backward()
    return out.detach(), h.grad, w.grad


def _plain_head(h, w, labels):
    return torch.log_softmax(F.linear(h, w).float(), -1)[torch.arange(h.shape[0]), labels]


def _chunked_head(h, w, labels):
    return _ChunkedLabelLogProb.apply(h, w, None, labels, 16)


def test_chunked_head_under_autocast_differentiates_what_its_forward_computed():
    # logits of a few units, as a trained model has: there bf16 rounding moves the
    # log-sum-exp enough for a forward/backward dtype mismatch to show
    torch.manual_seed(0)
    hidden, weight = torch.randn(64, 32), torch.randn(400, 32) * 3
    labels = torch.randint(0, 400, (64,))
    out_p, grad_h_p, grad_w_p = _head_grads(_plain_head, hidden, weight, labels, autocast=True)
    out_c, grad_h_c, grad_w_c = _head_grads(_chunked_head, hidden, weight, labels, autocast=True)
    assert torch.allclose(out_c, out_p, atol=1e-5)
    # the same bf16 logits in both passes: only the rounding of the products differs
    assert _relative(grad_h_c, grad_h_p) < 1e-2
    assert _relative(grad_w_c, grad_w_p) < 1e-2


def _model_grads(model, batch, chunked: bool, autocast: bool) -> torch.Tensor:
    model = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logps = completion_logps(model, batch, chunked)
    (logps * torch.linspace(-1, 1, logps.shape[0])).sum().backward()
    return torch.cat([p.grad.float().flatten() for p in model.parameters()])


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16"])
def test_chunked_head_gradient_error_is_no_worse_than_plain_bf16_autograd(
    tiny_tokenizer, pairs, precision
):
    model = build_model(tiny_tokenizer)
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # logits of a few units (tied: embeddings too)
    batch = build_batch(tokenize_pairs(tiny_tokenizer, pairs, 512, 256), 0, share_prompt=True)
    reference = _model_grads(model, batch, chunked=False, autocast=False)
    autocast = precision == "bf16-autocast"
    low = cast_parameters(copy.deepcopy(model), torch.bfloat16) if precision == "bf16" else model
    plain = _relative(_model_grads(low, batch, chunked=False, autocast=autocast), reference)
    chunked = _relative(_model_grads(low, batch, chunked=True, autocast=autocast), reference)
    assert 0 < plain < 0.05  # bf16 really ran
    assert chunked <= 1.25 * plain, (chunked, plain)


def test_auto_precision_is_fp32_on_cpu_and_autocast_on_cuda():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16-autocast"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_master_weights_keep_updates_below_bf16_resolution():
    param = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    masters = MasterWeights([param])
    optimizer = torch.optim.SGD(masters.params, lr=1e-4)
    for _ in range(100):
        param.grad = torch.ones_like(param)
        masters.pull_grads()
        assert param.grad is None and masters.params[0].grad.dtype == torch.float32
        optimizer.step()
        masters.push_weights()
    # each step of 1e-4 is far below half a bf16 ulp at 1.0 (2**-8): alone it would round away
    assert torch.allclose(masters.params[0], torch.full((4,), 0.99), atol=1e-6)
    assert torch.equal(param, masters.params[0].to(torch.bfloat16))
    assert param.dtype == torch.bfloat16


def _config(**overrides):
    return dpo_config(**{"learning_rate": 1e-3, **overrides})


@pytest.fixture(scope="module")
def fp32_run(tiny_model_dir, tmp_path_factory):
    from training.core.data import pair_from_row

    from .conftest import make_pair_rows

    pairs = [pair_from_row(row) for row in make_pair_rows()]
    return train_dpo(pairs, tiny_model_dir, tmp_path_factory.mktemp("fp32") / "v", _config())


@pytest.mark.parametrize("precision", ["bf16-autocast", "bf16"])
def test_a_run_in_bf16_follows_the_fp32_run(tiny_model_dir, pairs, tmp_path, fp32_run, precision):
    assert fp32_run.precision == "fp32"
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "v", _config(precision=precision))
    assert result.precision == precision
    losses = [h["loss"] for h in result.history]
    expected = [h["loss"] for h in fp32_run.history]
    assert losses != expected  # bfloat16 really ran
    assert losses == pytest.approx(expected, abs=1e-2)
    assert result.history[-1]["reward_accuracy"] == 1.0
    with safe_open(tmp_path / "v" / "model.safetensors", "pt") as saved:
        assert {saved.get_slice(k).get_dtype() for k in saved.keys()} == {"F32"}  # noqa: SIM118
    model, _ = load_model(tmp_path / "v")
    trained, _ = load_model(fp32_run.version_dir)
    before, _ = load_model(tiny_model_dir)
    for (name, p), q, r in zip(
        model.named_parameters(), trained.parameters(), before.parameters(), strict=True
    ):
        # it moved from the start the way the fp32 run did
        assert _relative(p - r, q - r) < 0.3, name
