"""Data-parallel training: N processes under torchrun equal one process on the same global batch."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.core.config import DPOConfig
from training.core.data import read_pairs
from training.core.distributed import Parallel, shard_bounds
from training.core.trainer import train_dpo

ROOT = Path(__file__).resolve().parents[2]
PAIRS = ROOT / "training" / "core" / "samples" / "pairs.jsonl"


@pytest.mark.parametrize("n,world", [(11, 2), (3, 2), (1, 2), (7, 3), (4, 4), (0, 2)])
def test_shards_cover_every_item_once_in_order(n, world):
    items = list(range(n))
    shards = [Parallel(rank=r, world=world).shard(items) for r in range(world)]
    assert [i for s in shards for i in s] == items
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert shard_bounds(n, 0, world)[0] == 0 and shard_bounds(n, world - 1, world)[1] == n


def test_alone_is_a_no_op():
    par = Parallel()
    assert par.sharded_map(lambda part: [x * 2 for x in part], [1, 2, 3]) == [2, 4, 6]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    par.sum_gradients([p])
    assert p.grad.tolist() == [3.0, 3.0]


def _weights(version: Path) -> dict[str, torch.Tensor]:
    return load_file(version / "model.safetensors")


@pytest.mark.slow
def test_two_processes_train_what_one_trains(tiny_model_dir, tmp_path):
    # 11 training pairs in global batches of 5 (5, 5, 1): shards of 3 and 2, and of 1 and none
    # (a rank with nothing to train still takes part in the gradient sum)
    options = dict(lora=False, batch_size=5, epochs=2, learning_rate=2e-3, precision="fp32")
    one = tmp_path / "one"
    train_dpo(read_pairs(PAIRS), tiny_model_dir, one, DPOConfig(device="cpu", **options))

    two = tmp_path / "two"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "training", "train", "--nproc", "2",
         "--data", PAIRS, "--model", tiny_model_dir, "--out", two,
         "--no-lora", "--batch-size", "5", "--epochs", "2", "--lr", "2e-3",
         "--precision", "fp32", "--device", "cpu", "--no-progress", "--progress-json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - started < 600
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    steps, summary = lines[:-1], lines[-1]
    assert [s["step"] for s in steps] == list(range(1, 7))  # rank 0 alone reports
    assert summary["num_processes"] == 2 and summary["steps"] == 6

    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m1["num_processes"] == 1 and m2["num_processes"] == 2
    assert m2["pairs_trained"] == m1["pairs_trained"] == 22
    # (not reward_accuracy: while the policy is still the reference, its rewards are rounding
    # noise around 0, and which side of a near-tie they fall on depends on the batching)
    for h1, h2 in zip(m1["history"], m2["history"], strict=True):
        for key in ("loss", "margin", "chosen_reward", "chosen_logp", "grad_norm"):
            assert h2[key] == pytest.approx(h1[key], rel=1e-4, abs=1e-5), key
    for key in ("loss", "margin"):
        assert m2["heldout_after"][key] == pytest.approx(m1["heldout_after"][key], abs=1e-5)
    # training moved the weights, and both runs moved them to the same place
    start = load_file(tiny_model_dir / "model.safetensors")
    w1, w2 = _weights(one), _weights(two)
    assert w1.keys() == w2.keys()
    moved = max(float((w1[k] - start[k]).abs().max()) for k in w1)
    assert moved > 1e-3
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], rtol=1e-4, atol=1e-5)
    # one version, complete, and no temporary directory left beside it
    assert (two / "prefloop_version.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "training", "train", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_nproc_must_be_positive(tmp_path):
    proc = _cli("--data", PAIRS, "--model", "demo", "--out", tmp_path / "v", "--nproc", "0")
    assert proc.returncode == 2 and "--nproc: must be at least 1" in proc.stderr


def test_a_bad_config_file_is_named(tmp_path, tiny_model_dir):
    config = tmp_path / "config.json"
    config.write_text('{"beta": 0.1, "batch_size": 0}')
    proc = _cli("--data", PAIRS, "--model", tiny_model_dir, "--out", tmp_path / "v",
                "--config", config)  # fmt: skip
    assert proc.returncode == 2 and "batch_size must be at least 1" in proc.stderr
    config.write_text("[1, 2]")
    proc = _cli("--data", PAIRS, "--model", tiny_model_dir, "--out", tmp_path / "v",
                "--config", config)  # fmt: skip
    assert proc.returncode == 2 and f"--config {config}: expected a JSON object" in proc.stderr
    assert not (tmp_path / "v").exists()


def test_the_launcher_refuses_an_existing_output_before_starting(tmp_path):
    (tmp_path / "v").mkdir()
    proc = _cli("--data", PAIRS, "--model", "demo", "--out", tmp_path / "v", "--nproc", "2")
    assert proc.returncode == 2 and "output already exists" in proc.stderr


def test_the_ranks_get_the_command_without_nproc():
    from training.core.cli import _without_nproc

    argv = ["train", "--nproc", "2", "--data", "x", "--nproc=3", "--out", "y"]
    assert _without_nproc(argv) == ["train", "--data", "x", "--out", "y"]
