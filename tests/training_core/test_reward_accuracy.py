"""Held-out reward accuracy counts a tie as half, so an untrained policy scores chance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.core import DPOConfig, train_dpo


def test_heldout_accuracy_is_a_half_when_the_policy_still_equals_the_reference(
    tiny_model_dir: Path, pairs: list[Any], tmp_path: Path
) -> None:
    # before training the policy is the reference: every implicit reward is exactly 0, so
    # every held-out pair is a tie (a strict ">" scored this 0.0, and any version beat it)
    config = DPOConfig(
        lora=False, epochs=1, batch_size=4, heldout_fraction=0.5, warmup_ratio=0.0, seed=0
    )
    result = train_dpo(pairs, tiny_model_dir, tmp_path / "v1", config)
    assert result.heldout_before is not None and result.num_heldout_pairs == 4
    assert result.heldout_before["chosen_reward"] == result.heldout_before["rejected_reward"] == 0
    assert result.heldout_before["reward_accuracy"] == 0.5
    # the first step's batch is scored before any update: ties there too
    assert result.history[0]["reward_accuracy"] == 0.5
