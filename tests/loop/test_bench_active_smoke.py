"""`bench/bench_active.py` at a tiny size: every strategy runs through the real queue, and the
table, the numbers and the plot come out."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_it_compares_every_strategy_and_writes_the_plot(
    var_dir: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location(
        "bench_active", ROOT / "bench" / "bench_active.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_active", bench)  # its dataclass looks itself up
    spec.loader.exec_module(bench)
    out = tmp_path / "bench"
    argv = ["--pool-prompts", "4", "--pairs-per-prompt", "2", "--heldout-prompts", "2"]
    argv += ["--budget", "8", "--step", "4", "--epochs", "1", "--seeds", "0", "--out", str(out)]

    assert bench.main(argv) == 0

    record = json.loads((out / "results.json").read_text())
    table = record["summary"]["table"]
    assert set(table) == {"random", "uncertainty", "disagreement", "coverage"}
    for rows in table.values():
        assert [r["judgments"] for r in rows] == [0, 4, 8]
        assert rows[0]["mean"] == 0.5  # the untrained reference: every margin is zero
        assert all(0.0 <= r["mean"] <= 1.0 for r in rows)
    assert (out / "bench-active.svg").read_text().lstrip().startswith("<?xml")
    printed = capsys.readouterr().out
    assert "random's final mean accuracy" in printed and "coverage" in printed

    from annotate.models import Comparison, Judgment, Project

    # each run judged its budget through the queue, at most overlap 2 per pair
    for project in Project.objects.filter(name__contains="seed 0"):
        assert Judgment.objects.filter(project=project).count() == 8
        assert (
            max(Comparison.objects.filter(project=project).values_list("judgment_count", flat=True))
            <= 2
        )
    scored = Comparison.objects.filter(project__pair_selection="uncertainty")
    assert scored.exclude(policy_margin=None).exists()
