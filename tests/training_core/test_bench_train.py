"""`bench/bench_train.py --device cpu --smoke`: the GPU matrix's script on 2-layer models."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_device_matrix_runs_trl_and_ours_and_prints_the_table(tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable, ROOT / "bench" / "bench_train.py",
            "--device", "cpu", "--smoke", "--steps", "2", "--batch-size", "2",
            "--precisions", "bf16", "--bf16-modes", "bf16", "--checkpointing", "selective",
            "--threads", "1", "--json", report,
        ],
        cwd=tmp_path,  # the script finds training/core on its own
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("versions: python ")
    assert "torch" in proc.stdout.splitlines()[0] and "trl" in proc.stdout.splitlines()[0]
    data = json.loads(report.read_text())
    runs = [(r["trainer"], r["precision"], r["checkpointing"]) for r in data["runs"]]
    assert runs == [
        ("trl", "bf16", True),
        ("trl", "bf16", False),
        ("ours", "bf16", "selective"),
    ]
    for run in data["runs"]:
        assert run["pairs_per_s"] > 0 and run["peak_bytes"] > 0 and run["steps"] == 2
    ours = data["runs"][-1]
    assert ours["django_loaded"] is False
    row = next(line for line in proc.stdout.splitlines() if "ours bf16" in line)
    assert row.count("x mem") == 2  # compared with both TRL baselines
