"""Our loss and gradients against TRL's DPOTrainer on the same tiny model and batch."""

import copy

import pytest
import torch

from training.core.config import DPOConfig
from training.core.data import pair_from_row, tokenize_pairs
from training.core.logprobs import build_batch, completion_logps
from training.core.losses import preference_loss
from training.core.trainer import _sequence_logps

from .conftest import build_model, make_pair_rows

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")


def _trl_loss_and_grads(policy, reference, tokenizer, rows, loss_type, beta, tmp_path):
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        loss_type=[loss_type],
        beta=beta,
        max_length=512,
        per_device_train_batch_size=len(rows),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        # TRL defaults to bf16 autocast and checkpointing; compare in plain float32
        bf16=False,
        gradient_checkpointing=False,
    )
    trainer = trl.DPOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    dataset = trainer.train_dataset
    batch = trainer.data_collator([dataset[i] for i in range(len(dataset))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    return loss.item(), grads


def _our_loss_and_grads(policy, reference, tokenizer, rows, loss_type, beta):
    config = DPOConfig(loss=loss_type, beta=beta, lora=False)
    tokenized = tokenize_pairs(tokenizer, [pair_from_row(r) for r in rows], 512, 512)
    ref = _sequence_logps(reference, tokenized, config, tokenizer.pad_token_id, torch.device("cpu"))
    b = len(tokenized)
    batch = build_batch(tokenized, tokenizer.pad_token_id, share_prompt=True)
    policy.train()
    logps = completion_logps(policy, batch)
    out = preference_loss(
        logps[:b],
        logps[b:],
        torch.tensor([c for c, _ in ref]),
        torch.tensor([r for _, r in ref]),
        loss=loss_type,
        beta=beta,
        chosen_lengths=batch.lengths[:b].float(),
        rejected_lengths=batch.lengths[b:].float(),
    )
    out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in policy.named_parameters()}


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_and_gradients_match_trl(tiny_tokenizer, tmp_path, loss_type):
    rows = make_pair_rows()
    # policy and reference differ, so the loss and its gradient are not trivial
    policy = build_model(tiny_tokenizer, seed=1)
    reference = build_model(tiny_tokenizer, seed=2)
    ours = _our_loss_and_grads(
        copy.deepcopy(policy), copy.deepcopy(reference), tiny_tokenizer, rows, loss_type, 0.1
    )
    theirs = _trl_loss_and_grads(
        copy.deepcopy(policy),
        copy.deepcopy(reference),
        tiny_tokenizer,
        rows,
        loss_type,
        0.1,
        tmp_path,
    )
    assert ours[0] == pytest.approx(theirs[0], rel=1e-5, abs=1e-6)
    assert ours[0] != pytest.approx(0.6931, abs=1e-3)
    assert set(ours[1]) == set(theirs[1])
    for name, grad in ours[1].items():
        assert torch.allclose(grad, theirs[1][name], rtol=1e-4, atol=1e-6), name
    assert any(g.abs().sum() > 0 for g in ours[1].values())
