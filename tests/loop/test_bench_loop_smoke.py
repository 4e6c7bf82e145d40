"""`bench/bench_loop.py` on the tiny model: the demo benchmark's pipeline, its JSON and its resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from annotate.models import Project
from training import services
from training.models import Round

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_loop", ROOT / "bench" / "bench_loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_runs_online_and_offline_and_resumes(var_dir: Path, tmp_path: Path, capsys: Any) -> None:
    bench = bench_module()
    out = tmp_path / "bench"
    argv = ["--model", "tiny", "--prompts", "16", "--rounds", "2", "--seeds", "0"]
    argv += ["--samples", "2", "--out", str(out)]

    assert bench.main(argv) == 0

    path = out / "seed-0.json"
    record = json.loads(path.read_text())
    chosen = json.loads((out / "word.json").read_text())
    # the candidate word nearest a 10% base rate on the eval split judges every run
    rates = chosen["rates"]
    assert abs(rates[chosen["word"]] - 0.1) == min(abs(r - 0.1) for r in rates.values())
    word = chosen["word"]
    assert record["done"] and record["judge"] == f"contains:{word}"
    assert record["base_success_rate"] == round(rates[word], 4)
    assert (record["annotators"], record["noise"]) == (3, 0.1)
    assert 0.0 <= record["base_success_rate"] <= 1.0 and record["base_samples"] == 3 * 2
    online, offline = record["online"], record["offline"]
    assert [row["round"] for row in online] == [1, 2]
    assert [row["version"] for row in online] == ["v1", "v2"]
    assert offline["round"] == 3 and offline["parent"] == "base"
    # the same judgments and optimizer steps as the two online rounds together
    assert online[0]["judgments"] < online[1]["judgments"] == offline["judgments"]
    assert offline["steps"] == online[0]["steps"] + online[1]["steps"]
    for row in [*online, offline]:
        low, high = row["ci95"]
        assert 0.0 <= low <= row["win_rate_over_base"] <= high <= 1.0
        assert row["kl_to_base"] is not None and 0.0 <= row["truncated_share"] <= 1.0
        assert row["eval_prompts"] == 3 and row["round_wall_s"] > 0
    printed = capsys.readouterr().out
    assert f"base success rate of contains:{word} on the eval split" in printed
    lines = printed.splitlines()
    for name, row in (("online 1", online[0]), ("online 2", online[1]), ("offline", offline)):
        line = next(line for line in lines if line.startswith(f"{name} ") and " v" in line)
        assert f"{row['win_rate_over_base']:.2f}" in line.split()
    assert "mean over 1 seed(s)" in printed and "lowest lower 95% bound" in printed

    # a finished seed is skipped
    project = Project.objects.get(slug="bench-loop-tiny-s0")
    assert bench.main(argv) == 0
    assert "seed 0: finished before, skipped" in capsys.readouterr().out
    assert Round.objects.filter(project=project).count() == 3

    # a run stopped after round 1 was measured, with a round left half-way: finished rounds
    # are measured without running them again, the half-way one is discarded
    path.write_text(json.dumps({**record, "online": online[:1], "offline": None, "done": False}))
    with services.in_process():
        stuck = services.start_round(project)
    assert bench.main(argv) == 0
    assert f"discarded the unfinished round(s) [{stuck.number}]" in capsys.readouterr().out
    assert not Round.objects.filter(pk=stuck.pk).exists()
    assert Round.objects.filter(project=project).count() == 3
    resumed = json.loads(path.read_text())
    assert resumed["done"] and resumed["online"][1]["version"] == "v2"
    assert resumed["offline"]["judgments"] == offline["judgments"]


def test_settings_lay_over_the_defaults_and_a_project_made_with_others_is_refused(
    var_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    from training.models import ProjectLoop

    bench = bench_module()
    out = tmp_path / "bench"
    argv = ["--model", "tiny", "--prompts", "16", "--seeds", "0", "--out", str(out)]
    args = bench.parse_args([*argv, "--settings", '{"k": 3, "dpo": {"epochs": 2}}'])
    rows = bench.demo_prompt_rows(args.prompts)
    project = bench.seed_project(args, 0, bench.model_spec(args, rows), rows)

    stored = ProjectLoop.of(project).settings
    # the given keys win; the tiny model's own settings stay, dpo merged key by key
    assert (
        stored["k"] == 3 and stored["pairs_per_prompt"] == bench.TINY_SETTINGS["pairs_per_prompt"]
    )
    assert stored["dpo"] == {**bench.TINY_SETTINGS["dpo"], "epochs": 2}

    # the same folder with other settings: refused, the project left as it was
    other = bench.parse_args([*argv, "--settings", '{"k": 5}'])
    with pytest.raises(SystemExit, match="made with other loop settings"):
        bench.seed_project(other, 0, bench.model_spec(other, rows), rows)
    assert ProjectLoop.of(project).settings == stored

    # settings the loop would refuse stop the run before anything is made, naming the field
    assert bench.main([*argv, "--out", str(tmp_path / "bad"), "--settings", '{"k": 1}']) == 2
    assert "--settings: k:" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "seed-0.json").exists()
    for text in ("{nope", "[1]"):
        with pytest.raises(SystemExit):
            bench.parse_args([*argv, "--settings", text])
    assert "--settings: " in capsys.readouterr().err
