"""The bundled SmolLM2 demo model end to end (slow: conversion and real-size forward passes)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.core import generate, load_model, resolve_demo_model

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "training" / "core" / "samples"

pytestmark = [pytest.mark.slow, pytest.mark.demo_model]


def test_demo_model_is_cached_as_safetensors_and_generates():
    path = resolve_demo_model()
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    assert resolve_demo_model() == path
    model, tokenizer = load_model("demo")
    assert model.config.model_type == "llama"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    (row,) = generate(
        (model, tokenizer), [[{"role": "user", "content": "What is 2+2?"}]], k=2, max_new_tokens=8
    )
    assert len(row) == 2 and all(s.token_count > 0 and s.logprob < 0 for s in row)


def test_two_processes_converting_at_once_both_succeed(tmp_path):
    env = {**os.environ, "PREFLOOP_MODEL_CACHE": str(tmp_path), "TQDM_DISABLE": "1"}
    code = "from training.core import resolve_demo_model; print(resolve_demo_model())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1]
    assert [p.name for p in tmp_path.iterdir()] == [Path(outputs[0]).name]
    assert (Path(outputs[0]) / "model.safetensors").exists()


def test_cli_trains_the_demo_model_and_the_version_generates(tmp_path):
    out = tmp_path / "v1"
    train = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", SAMPLES / "pairs.jsonl",
         "--model", "demo", "--out", out, "--lora", "--max-steps", "1", "--batch-size", "2",
         "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    summary = json.loads(train.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1 and summary["heldout_after"] is not None
    completions = tmp_path / "c.jsonl"
    gen = subprocess.run(
        [sys.executable, "-m", "training", "generate", "--model", out, "--prompts",
         SAMPLES / "prompts.jsonl", "-k", "2", "--max-new-tokens", "8", "--out", completions],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    assert len(completions.read_text().splitlines()) == 8
