import copy

import pytest
import torch

from training.core.data import tokenize_pairs
from training.core.logprobs import _ChunkedLabelLogProb, build_batch, completion_logps

from .conftest import build_model


def test_chunked_label_logprob_has_exact_gradients():
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, dtype=torch.double, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.double, requires_grad=True)
    bias = torch.randn(11, dtype=torch.double, requires_grad=True)
    labels = torch.randint(0, 11, (7,))

    def fn(h, w, b):
        return _ChunkedLabelLogProb.apply(h, w, b, labels, 3)

    assert torch.autograd.gradcheck(fn, (hidden, weight, bias))
    expected = torch.log_softmax(hidden @ weight.T + bias, -1)[torch.arange(7), labels]
    assert torch.allclose(fn(hidden, weight, bias), expected)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prompt_layout_equals_separate_rows(tiny_tokenizer, pairs, attn):
    model = build_model(tiny_tokenizer)
    model.config._attn_implementation = attn
    tokenized = tokenize_pairs(tiny_tokenizer, pairs, 512, 256)
    pad = tiny_tokenizer.pad_token_id
    shared = completion_logps(model, build_batch(tokenized, pad, share_prompt=True))
    separate = completion_logps(model, build_batch(tokenized, pad, share_prompt=False))
    full = completion_logps(model, build_batch(tokenized, pad, share_prompt=False), chunked=False)
    assert torch.allclose(shared, separate, atol=1e-5)
    assert torch.allclose(shared, full, atol=1e-4)


def test_shared_prompt_layout_gives_the_same_gradients(tiny_tokenizer, pairs):
    tokenized = tokenize_pairs(tiny_tokenizer, pairs, 512, 256)
    pad = tiny_tokenizer.pad_token_id
    grads = []
    for share, chunked in [(True, True), (False, False)]:
        model = copy.deepcopy(build_model(tiny_tokenizer))
        completion_logps(model, build_batch(tokenized, pad, share), chunked).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], atol=1e-4), name
