"""Generation batch by batch: progress, rows written as they are done, resuming a stopped run."""

import json

import pytest

from training.core import cli, generation, load_model
from training.core.generation import generate, generate_batches

PROMPTS = [
    [{"role": "user", "content": text}]
    for text in (
        "What is two plus two?",
        "Name the capital of France.",
        "Write a short poem about the sea.",
        "Say something helpful.",
        "Count to five.",
        "Hi",
    )
]
SETTINGS = {"k": 2, "max_new_tokens": 5, "seed": 11, "batch_size": 4}


def test_each_batch_reports_its_samples_and_the_prompts_it_completed(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    batches = list(generate_batches(loaded, PROMPTS, **SETTINGS))
    assert len(batches) == 3  # 6 prompts x 2 samples, 4 sequences per batch
    assert [b.sequences_done for b in batches] == [4, 8, 12]
    assert {b.sequences_total for b in batches} == {12}
    assert batches[-1].eta_s == 0.0 and batches[0].eta_s is not None
    completed = [i for b in batches for i in b.completed]
    assert sorted(completed) == list(range(6))
    assert all(b.new_tokens > 0 and b.tokens_per_s > 0 for b in batches)
    whole = generate(loaded, PROMPTS, **SETTINGS)
    for batch in batches:
        for i, samples in batch.completed.items():
            assert samples == whole[i]


def test_skipped_prompts_are_not_sampled_and_the_rest_come_out_the_same(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    whole = generate(loaded, PROMPTS, **SETTINGS)
    first = next(iter(generate_batches(loaded, PROMPTS, **SETTINGS)))
    rest = list(generate_batches(loaded, PROMPTS, **SETTINGS, skip=first.completed))
    assert len(rest) == 2 and rest[-1].sequences_total == 8
    got = {i: s for b in rest for i, s in b.completed.items()}
    assert set(got) == set(range(6)) - set(first.completed)
    for i, samples in got.items():
        assert samples == whole[i]


def _args(model, prompts, out, *extra):
    return ["generate", "--model", str(model), "--prompts", str(prompts), "--out", str(out),
            "-k", "2", "--max-new-tokens", "5", "--seed", "11", "--batch-size", "4",
            "--no-progress", *extra]  # fmt: skip


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def _rows(path):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["prompt_index"], r["sample_index"]))


def test_a_stopped_run_keeps_the_rows_of_its_finished_batches(
    tiny_model_dir, prompts_file, tmp_path, monkeypatch, capsys
):
    real = generation.generate_batches

    def stopped_after_two(*args, **kwargs):
        for n, batch in enumerate(real(*args, **kwargs)):
            if n == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(generation, "generate_batches", stopped_after_two)
    out = tmp_path / "out.jsonl"
    assert cli.main(_args(tiny_model_dir, prompts_file, out)) == 130
    rows = _rows(out)
    assert len(rows) == 8  # two batches of two prompts x two samples
    assert {"text", "finished", "token_ids", "logprob"} <= set(rows[0])


def test_resume_completes_a_stopped_run_as_an_uninterrupted_one(
    tiny_model_dir, prompts_file, tmp_path, capsys
):
    whole = tmp_path / "whole.jsonl"
    assert cli.main(_args(tiny_model_dir, prompts_file, whole)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["completions"] == 12 and summary["resumed_prompts"] == 0
    assert 0.0 <= summary["truncated_share"] <= 1.0

    # a stop in the middle of writing: one whole prompt, half of another, half a line
    lines = whole.read_text().splitlines(keepends=True)
    first = [line for line in lines if json.loads(line)["prompt_index"] == 0]
    other = next(line for line in lines if json.loads(line)["prompt_index"] == 1)
    stopped = tmp_path / "stopped.jsonl"
    stopped.write_text("".join(first) + other + other[:20])

    assert cli.main(_args(tiny_model_dir, prompts_file, stopped)) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(_args(tiny_model_dir, prompts_file, stopped, "--resume")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["resumed_prompts"] == 1 and summary["completions"] == 10
    assert _rows(stopped) == _rows(whole)

    # resuming a finished run samples nothing
    assert cli.main(_args(tiny_model_dir, prompts_file, stopped, "--resume")) == 0
    assert json.loads(capsys.readouterr().out.strip())["completions"] == 0
    assert _rows(stopped) == _rows(whole)


def test_resume_refuses_an_output_of_other_prompts(tiny_model_dir, prompts_file, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    row = {"prompt_index": 0, "sample_index": 0, "prompt": [{"role": "user", "content": "x"}]}
    out.write_text(json.dumps(row) + "\n")
    assert cli.main(_args(tiny_model_dir, prompts_file, out, "--resume")) == 2
    assert "line 1: prompt 0 is not in the prompts file" in capsys.readouterr().err
