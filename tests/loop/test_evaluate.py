"""`manage.py evaluate`: every version on the same eval prompts and seeds, as a JSON report."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Project, Prompt
from training import services
from training.core.tiny import save_tiny, tiny_llama, word_tokenizer
from training.models import ModelVersion

from .conftest import VOCAB, make_loop_project

CONTRACT_KEYS = {
    "version",
    "win_rate_over_base",
    "ci95",
    "length_controlled_win_rate",
    "kl_to_base",
    "mean_tokens",
    "truncated_share",
    "win_rate_over_parent",
    "ci95_parent",
}


def prefer_a(messages: list[dict[str, Any]], a: str, b: str) -> str:
    """A judge that always prefers the version being measured (the first side)."""
    return "a"


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with other random weights than the base."""
    tokenizer = word_tokenizer(VOCAB)
    return save_tiny(
        tiny_llama(tokenizer, seed=1), tokenizer, tmp_path_factory.mktemp("models") / "other"
    )


@pytest.fixture
def project(db: Any, tiny_model_dir: Path, other_model_dir: Path, var_dir: Path) -> Project:
    """base; v1 with other weights (serving); v2 with v1's weights, rejected by the gate."""
    project = make_loop_project(tiny_model_dir, n_prompts=4, n_eval=4)
    base = services.base_version(project)
    base.state = ModelVersion.State.RETIRED
    base.save(update_fields=["state"])
    v1 = ModelVersion.objects.create(
        project=project,
        number=1,
        spec=str(other_model_dir),
        parent=base,
        state=ModelVersion.State.SERVING,
    )
    ModelVersion.objects.create(
        project=project,
        number=2,
        spec=str(other_model_dir),
        parent=v1,
        state=ModelVersion.State.REJECTED,
    )
    return project


def _evaluate(project: Project, tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "report.json"
    stdout = io.StringIO()
    call_command(
        "evaluate",
        project.slug,
        "--samples",
        "2",
        "--json",
        str(out),
        *args,
        stdout=stdout,
        stderr=io.StringIO(),
    )
    return json.loads(out.read_text()), stdout.getvalue()


def test_it_writes_the_json_contract(project: Project, tmp_path: Path) -> None:
    report, table = _evaluate(project, tmp_path, "--judge", "shorter")
    assert set(report) == {"judge", "eval_prompts", "samples", "versions"}
    assert (report["judge"], report["eval_prompts"], report["samples"]) == ("shorter", 4, 2)
    base, v1, v2 = report["versions"]
    assert [v["version"] for v in report["versions"]] == ["base", "v1", "v2"]
    for entry in report["versions"]:
        assert set(entry) >= CONTRACT_KEYS
        assert 1.0 <= entry["mean_tokens"] <= 6.0
        assert 0.0 <= entry["truncated_share"] <= 1.0
    # the base against itself, an even match by definition
    assert base["win_rate_over_base"] == 0.5 and base["ci95"] == [0.5, 0.5]
    assert base["kl_to_base"] == 0.0 and base["win_rate_over_parent"] is None
    # rejected versions are reported, and marked
    assert v2["state"] == "rejected" and v1["state"] == "serving"
    low, high = v1["ci95"]
    assert 0.0 <= low <= v1["win_rate_over_base"] <= high <= 1.0
    assert v1["kl_to_base"] != 0.0
    # v1 is v2's parent and has its weights: with the same seeds they sample the same texts,
    # so v2 ties v1 everywhere and measures exactly as v1 against the base
    assert v2["win_rate_over_parent"] == 0.5 and v2["ci95_parent"] == [0.5, 0.5]
    for key in ("win_rate_over_base", "ci95", "length_controlled_win_rate", "kl_to_base"):
        assert v2[key] == v1[key], key
    assert v1["win_rate_over_parent"] == v1["win_rate_over_base"]
    lines = table.strip().splitlines()
    assert "win vs base" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["base", "v1", "v2"]


def test_it_measures_the_version_as_the_first_side(project: Project, tmp_path: Path) -> None:
    judge = f"{__name__}.prefer_a"
    report, _ = _evaluate(project, tmp_path, "--judge", judge, "--versions", "v1")
    base, v1 = report["versions"]
    assert v1["win_rate_over_base"] == 1.0 and v1["ci95"] == [1.0, 1.0]
    assert v1["length_controlled_win_rate"] == 1.0
    assert base["version"] == "base"


def test_it_reads_samples_from_the_cache_when_run_again(
    project: Project, tmp_path: Path, monkeypatch: Any
) -> None:
    first, _ = _evaluate(project, tmp_path, "--judge", "shorter", "--versions", "v1")

    def no_loading(spec: str) -> None:
        raise AssertionError(f"loaded {spec} again")

    monkeypatch.setattr("training.services.evaluation.load_model", no_loading)
    again, _ = _evaluate(project, tmp_path, "--judge", "longer", "--versions", "v1")
    assert [v["mean_tokens"] for v in again["versions"]] == [
        v["mean_tokens"] for v in first["versions"]
    ]
    assert [v["kl_to_base"] for v in again["versions"]] == [
        v["kl_to_base"] for v in first["versions"]
    ]


def test_it_draws_the_eval_split_of_a_project_without_one(
    db: Any, tiny_model_dir: Path, var_dir: Path, tmp_path: Path
) -> None:
    project = make_loop_project(tiny_model_dir, n_prompts=10, n_eval=0)
    report, _ = _evaluate(project, tmp_path, "--judge", "shorter")
    assert report["eval_prompts"] == 2
    assert Prompt.objects.filter(project=project, split="eval").count() == 2
    assert [v["version"] for v in report["versions"]] == ["base"]


def test_it_evaluates_on_a_prompts_file(project: Project, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello world"}\n{"prompt": "red green blue"}\n')
    report, _ = _evaluate(
        project, tmp_path, "--judge", "shorter", "--prompts", str(prompts), "--versions", "base"
    )
    assert report["eval_prompts"] == 2
    assert [v["version"] for v in report["versions"]] == ["base"]


def test_it_names_a_version_that_does_not_exist(project: Project, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="'v9' does not exist"):
        _evaluate(project, tmp_path, "--judge", "shorter", "--versions", "v1,v9")


def test_it_names_an_unknown_judge(project: Project, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="unknown rule"):
        _evaluate(project, tmp_path, "--judge", "politest")


SEEN: list[list[dict[str, Any]]] = []
SYSTEM = {"role": "system", "content": "Answer in one word."}


def record_prompt(messages: list[dict[str, Any]], a: str, b: str) -> str:
    """A judge that notes the chat each pair answered."""
    SEEN.append(messages)
    return "tie"


@pytest.fixture
def sampled(project: Project, monkeypatch: Any) -> list[list[dict[str, Any]]]:
    """The chats the models sample after, with the project's system prompt set."""
    from training.core import generation

    loop = project.loop
    loop.settings = {**loop.settings, "system_prompt": SYSTEM["content"]}
    loop.save(update_fields=["settings"])
    chats: list[list[dict[str, Any]]] = []
    real = generation.generate_seeded

    def spy(model: Any, prompts: list[Any], *args: Any, **kw: Any) -> Any:
        chats.extend(prompts)
        return real(model, prompts, *args, **kw)

    monkeypatch.setattr(generation, "generate_seeded", spy)
    return chats


def test_every_version_writes_after_the_projects_system_prompt(
    project: Project, tmp_path: Path, sampled: list[list[dict[str, Any]]]
) -> None:
    SEEN.clear()
    _evaluate(project, tmp_path, "--judge", f"{__name__}.record_prompt", "--versions", "v1")
    assert sampled and all(messages[0] == SYSTEM for messages in sampled)
    assert SEEN and all(messages[0] == SYSTEM for messages in SEEN)
    # the samples of another system prompt are not read back from the cache
    loop = project.loop
    loop.settings = {**loop.settings, "system_prompt": ""}
    loop.save(update_fields=["settings"])
    sampled.clear()
    _evaluate(project, tmp_path, "--judge", "shorter", "--versions", "v1")
    assert sampled and all(messages[0]["role"] == "user" for messages in sampled)


def test_the_gate_samples_after_the_projects_system_prompt(
    project: Project, sampled: list[list[dict[str, Any]]]
) -> None:
    from training.loop_settings import loop_settings
    from training.services.gate_rules import dev_samples

    prompts = list(Prompt.objects.filter(project=project, split="eval"))
    rows = dev_samples(services.base_version(project), prompts, 2, loop_settings(project))
    assert len(rows) == len(prompts) and all(len(row) == 2 for row in rows)
    assert sampled and all(messages[0] == SYSTEM for messages in sampled)


def test_a_stopped_evaluation_keeps_the_samples_it_drew(
    project: Project, tmp_path: Path, monkeypatch: Any
) -> None:
    from training.core import generation
    from training.services.evaluation import eval_cache_dir

    loop = project.loop
    loop.settings = {**loop.settings, "generation_batch_size": 2}  # one prompt per batch
    loop.save(update_fields=["settings"])
    real = generation.sample_batch
    calls: list[int] = []

    def stops_at_the_third_batch(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("stopped")
        return real(*args, **kw)

    monkeypatch.setattr(generation, "sample_batch", stops_at_the_third_batch)
    with pytest.raises(RuntimeError, match="stopped"):
        _evaluate(project, tmp_path, "--judge", "shorter", "--versions", "v1")
    kept = [p for p in eval_cache_dir(project).rglob("*") if p.is_file()]
    assert len(kept) == 2
    # run again, it samples only the rest: v1's two other prompts, its KL draws and the base
    counted: list[int] = []

    def counting(*args: Any, **kw: Any) -> Any:
        counted.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(generation, "sample_batch", counting)
    _evaluate(project, tmp_path, "--judge", "shorter", "--versions", "v1")
    assert len(counted) == 2 + 4 + 4
