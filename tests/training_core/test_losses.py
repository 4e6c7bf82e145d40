import math

import pytest
import torch

from training.core.losses import (
    hinge_loss,
    ipo_loss,
    preference_loss,
    robust_loss,
    sigmoid_loss,
)


def test_it_gives_log_two_when_policy_equals_reference():
    zeros = torch.zeros(3)
    out = preference_loss(zeros, zeros, zeros, zeros, loss="sigmoid", beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(2))
    assert torch.equal(out.chosen_rewards, zeros)


def test_it_matches_eq_7_by_hand():
    chosen, rejected = torch.tensor([2.0]), torch.tensor([-1.0])
    expected = -math.log(1 / (1 + math.exp(-0.5 * 3.0)))
    assert sigmoid_loss(chosen, rejected, 0.5).item() == pytest.approx(expected)


def test_ipo_averages_per_token_and_targets_half_over_beta():
    chosen, rejected = torch.tensor([10.0]), torch.tensor([-10.0])
    lengths_c, lengths_r = torch.tensor([5.0]), torch.tensor([10.0])
    h = 10.0 / 5 - (-10.0 / 10)
    assert ipo_loss(chosen, rejected, lengths_c, lengths_r, 0.1).item() == pytest.approx(
        (h - 5.0) ** 2
    )


def test_hinge_is_zero_past_the_margin():
    assert hinge_loss(torch.tensor([20.0]), torch.tensor([0.0]), 0.1).item() == 0.0
    assert hinge_loss(torch.tensor([5.0]), torch.tensor([0.0]), 0.1).item() == pytest.approx(0.5)


def test_robust_reduces_to_sigmoid_without_flips():
    c, r = torch.randn(4), torch.randn(4)
    assert torch.allclose(robust_loss(c, r, 0.1, 0.0), sigmoid_loss(c, r, 0.1))
    assert not torch.allclose(robust_loss(c, r, 0.1, 0.2), sigmoid_loss(c, r, 0.1))


def test_weights_multiply_each_pair_loss():
    c, r, z = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0]), torch.zeros(2)
    plain = preference_loss(c, r, z, z, beta=1.0)
    weighted = preference_loss(c, r, z, z, beta=1.0, weights=torch.tensor([2.0, 0.0]))
    assert weighted.loss.item() == pytest.approx(plain.losses[0].item() * 2 / 2)


def test_ipo_without_lengths_is_an_error():
    z = torch.zeros(1)
    with pytest.raises(ValueError, match="lengths"):
        preference_loss(z, z, z, z, loss="ipo")
