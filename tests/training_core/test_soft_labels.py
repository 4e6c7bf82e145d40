"""Conservative DPO: per-pair label smoothing in the sigmoid loss, the data and the trainer."""

import json
import math

import pytest
import torch

from training.core import load_model, train_dpo
from training.core.data import DataError, PreferencePair, pair_from_row, read_pairs
from training.core.losses import preference_loss, sigmoid_loss

from .conftest import dpo_config


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_the_smoothed_loss_matches_a_hand_computation():
    # pair 0: h = 2 - (-1) = 3, beta 0.5, so beta * h = 1.5 and eps 0.2;
    # pair 1: h = -2, beta * h = -1, eps 0 (plain DPO); pair 2: h = 0, eps 0.5
    chosen = torch.tensor([2.0, -1.0, 0.3])
    rejected = torch.tensor([-1.0, 1.0, 0.3])
    eps = torch.tensor([0.2, 0.0, 0.5])
    losses = sigmoid_loss(chosen, rejected, 0.5, eps)
    expected = [
        -0.8 * _log_sigmoid(1.5) - 0.2 * _log_sigmoid(-1.5),
        -_log_sigmoid(-1.0),
        math.log(2),
    ]
    assert losses.tolist() == pytest.approx(expected)
    assert sigmoid_loss(chosen, rejected, 0.5, torch.zeros(3)).tolist() == pytest.approx(
        sigmoid_loss(chosen, rejected, 0.5).tolist()
    )


def test_its_gradient_by_hand_vanishes_at_a_tie_and_at_the_soft_target():
    # d loss / d h = beta * (sigmoid(beta h) - (1 - eps))
    beta = 0.5
    h = torch.tensor([0.0, 0.0, 3.0, 2 * math.log(3)], requires_grad=True)
    eps = torch.tensor([0.5, 0.2, 0.2, 0.25])
    sigmoid_loss(h, torch.zeros(4), beta, eps).sum().backward()
    assert h.grad is not None
    expected = [
        beta * (1 / (1 + math.exp(-beta * x)) - (1 - e))
        for x, e in zip([0.0, 0.0, 3.0, 2 * math.log(3)], [0.5, 0.2, 0.2, 0.25], strict=True)
    ]
    assert h.grad.tolist() == pytest.approx(expected)
    assert h.grad[0].item() == 0.0  # eps 0.5 at h = 0: a tie has nothing to learn
    assert h.grad[3].item() == pytest.approx(0.0, abs=1e-7)  # sigmoid(log 3) = 0.75 = 1 - eps


def test_preference_loss_passes_label_smoothing_and_weights_together():
    c, r, z = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]), torch.zeros(2)
    eps = torch.tensor([0.1, 0.3])
    out = preference_loss(
        c, r, z, z, beta=1.0, weights=torch.tensor([2.0, 1.0]), label_smoothing=eps
    )
    by_hand = [
        -0.9 * _log_sigmoid(1.0) - 0.1 * _log_sigmoid(-1.0),
        -0.7 * _log_sigmoid(-1.0) - 0.3 * _log_sigmoid(1.0),
    ]
    assert out.losses.tolist() == pytest.approx(by_hand)
    assert out.loss.item() == pytest.approx((2 * by_hand[0] + by_hand[1]) / 2)
    for loss in ("ipo", "hinge", "robust"):
        with pytest.raises(ValueError, match="label smoothing needs the sigmoid loss"):
            preference_loss(
                c,
                r,
                z,
                z,
                loss=loss,
                chosen_lengths=z + 1,
                rejected_lengths=z + 1,
                label_smoothing=eps,
            )
    hinge = preference_loss(c, r, z, z, loss="hinge", label_smoothing=torch.zeros(2))
    assert hinge.loss.item() > 0


def test_pairs_read_label_smoothing_from_rows(tmp_path):
    row = {"prompt": "Q", "chosen": "a", "rejected": "b", "label_smoothing": 0.25}
    assert pair_from_row(row).label_smoothing == 0.25
    assert pair_from_row({**row, "label_smoothing": None}).label_smoothing == 0.0
    assert pair_from_row({"prompt": "Q", "chosen": "a", "rejected": "b"}).label_smoothing == 0.0
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, "label_smoothing": 0.7}) + "\n")
    with pytest.raises(DataError, match="line 2: 'label_smoothing' must be a number between 0"):
        read_pairs(path)


def _params(directory):
    model, _ = load_model(directory)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _config(**overrides):
    return dpo_config(**{"epochs": 5, **overrides})


def test_the_trainer_trains_a_soft_pair_as_its_two_weighted_hard_pairs(
    tiny_model_dir, pairs, tmp_path
):
    """Pairs with eps = 0.25 train as each pair and its flip weighted 0.75 and 0.25:
    -(1 - eps) log s(bh) - eps log s(-bh) is exactly that mixture. Several steps, because
    Adam's first step does not see a gradient's scale, only its direction."""
    soft = [
        PreferencePair(p.prompt, p.chosen, p.rejected, weight=1.0, label_smoothing=0.25)
        for p in pairs[:2]
    ]
    # the batch mean over 4 rows halves each weight, so weights 1.5 and 0.5 give 0.75 and 0.25
    mixed = []
    for p in pairs[:2]:
        mixed.append(PreferencePair(p.prompt, p.chosen, p.rejected, weight=1.5))
        mixed.append(PreferencePair(p.prompt, p.rejected, p.chosen, weight=0.5))
    hard = [PreferencePair(p.prompt, p.chosen, p.rejected) for p in pairs[:2]]
    train_dpo(soft, tiny_model_dir, tmp_path / "soft", _config(batch_size=2))
    train_dpo(mixed, tiny_model_dir, tmp_path / "mixed", _config(batch_size=4))
    train_dpo(hard, tiny_model_dir, tmp_path / "hard", _config(batch_size=2))
    base, soft_after = _params(tiny_model_dir), _params(tmp_path / "soft")
    mixed_after, hard_after = _params(tmp_path / "mixed"), _params(tmp_path / "hard")

    def distance(a, b):
        return max((a[n] - b[n]).abs().max().item() for n in base)

    # float noise between the two layouts is about 1e-5; the soft labels move the weights
    # about 3e-2 away from the base and from where hard labels take them
    assert distance(soft_after, mixed_after) < 1e-4
    assert distance(soft_after, base) > 1e-2
    assert distance(soft_after, hard_after) > 1e-2


def test_the_trainer_refuses_label_smoothing_with_another_loss(tiny_model_dir, pairs, tmp_path):
    soft = [PreferencePair(pairs[0].prompt, pairs[0].chosen, pairs[0].rejected, 1.0, 0.1)]
    with pytest.raises(ValueError, match="label_smoothing need the sigmoid loss, not 'ipo'"):
        train_dpo(soft, tiny_model_dir, tmp_path / "v", _config(loss="ipo"))
