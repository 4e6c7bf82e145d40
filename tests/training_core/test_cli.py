import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "training" / "core" / "samples"


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "training", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_train_then_generate(tiny_model_dir, tmp_path):
    out = tmp_path / "v1"
    proc = _run(
        "train",
        "--data", SAMPLES / "pairs.jsonl",
        "--model", tiny_model_dir,
        "--out", out,
        "--loss", "ipo",
        "--beta", "0.2",
        "--no-lora",
        "--epochs", "2",
        "--batch-size", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6  # 11 training pairs (one held out), 3 batches x 2 epochs
    for key in ("pairs_per_s", "tokens_per_s", "peak_memory_bytes", "final", "heldout_after"):
        assert key in summary
    assert (out / "prefloop_version.json").exists()

    completions = tmp_path / "completions.jsonl"
    proc = _run(
        "generate", "--model", out, "--prompts", SAMPLES / "prompts.jsonl", "-k", "2",
        "--out", completions, "--max-new-tokens", "4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in completions.read_text().splitlines()]
    assert len(rows) == 8 and {"text", "token_count", "logprob"} <= set(rows[0])


def test_it_reads_plain_string_pairs_and_trains_lora(tiny_model_dir, tmp_path):
    data = tmp_path / "plain.jsonl"
    rows = [{"prompt": f"Q{i}: 2+2=", "chosen": " 4", "rejected": f" {i}"} for i in range(5)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    proc = _run("train", "--data", data, "--model", tiny_model_dir, "--out", tmp_path / "v",
                "--lora", "--max-steps", "1", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["steps"] == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_field", "line 2: missing field 'rejected'"),
        ("bad_model", "model path does not exist"),
        ("no_file", "cannot read"),
    ],
)
def test_bad_input_gives_one_line_and_no_traceback(tiny_model_dir, tmp_path, case, message):
    data = tmp_path / "pairs.jsonl"
    good = {"prompt": "a", "chosen": "b", "rejected": "c"}
    data.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    model = tiny_model_dir
    if case == "bad_model":
        data.write_text(json.dumps(good) + "\n")
        model = tmp_path / "nowhere" / "model"
    if case == "no_file":
        data = tmp_path / "missing.jsonl"
    proc = _run("train", "--data", data, "--model", model, "--out", tmp_path / "v")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_train_options_reach_the_config():
    from training.core.cli import _config, _parser

    base = ["train", "--data", "d.jsonl", "--model", "m", "--out", "o"]
    args = _parser().parse_args([*base, "--precision", "bf16", "--optimizer-impl", "foreach"])
    config = _config(args)
    assert (config.precision, config.optimizer_impl) == ("bf16", "foreach")
    assert config.gradient_checkpointing == "none"
    args = _parser().parse_args([*base, "--gradient-checkpointing"])
    assert _config(args).gradient_checkpointing == "full"
    args = _parser().parse_args([*base, "--gradient-checkpointing", "selective"])
    assert _config(args).gradient_checkpointing == "selective"
