"""A round trained on several processes: ``python -m training train --nproc N`` on the worker.

When a round's ``dpo.num_processes`` is above 1, the train task does not train in its own
process: it writes the round's pairs and config to a temporary directory and runs the command
line under torchrun (see `training.core.distributed`) on the machine of the worker that took
the task, one process per GPU on CUDA (gloo processes on CPU). The command reports each
optimizer step as a JSON line, which the task turns into the run's progress as it would its
own; rank 0 writes the version, whose ``metrics.json`` becomes the run's result. Stopping the
task (a time limit, a revoke) stops every process of the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from ..core.config import DPOConfig
from ..core.data import PreferencePair

if TYPE_CHECKING:
    from ..core.trainer import TrainResult

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 10.0
PROGRESS_KEYS = {"step", "total", "loss", "eta_s"}

StepCallback = Callable[[int, int, float, float | None], None]


class ParallelTrainingError(RuntimeError):
    """The processes of a data-parallel run failed; the message ends with their stderr."""


def train_command(
    data: Path,
    model: str,
    out_dir: Path,
    config_file: Path,
    nproc: int,
    reference_spec: str | None,
) -> list[str]:
    command = [
        sys.executable, "-m", "training", "train",
        "--nproc", str(nproc),
        "--data", str(data),
        "--model", model,
        "--out", str(out_dir),
        "--config", str(config_file),
        "--no-progress",
        "--progress-json",
    ]  # fmt: skip
    if reference_spec is not None:
        command += ["--reference-model", reference_spec]
    return command


def _stop(proc: subprocess.Popen[str]) -> None:
    """End the launcher and its ranks (they share the session it was started in)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def train_on_processes(
    pairs: Sequence[PreferencePair],
    model_spec: str,
    out_dir: Path,
    config: DPOConfig,
    *,
    on_step: StepCallback | None = None,
    reference_spec: str | None = None,
) -> TrainResult:
    """Train like `train_dpo`, on ``config.num_processes`` processes of this machine.

    Raises:
        ParallelTrainingError: the command failed (its exit status and the end of its stderr).
    """
    from ..core.trainer import TrainResult

    with tempfile.TemporaryDirectory(prefix="prefloop-train-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "pairs.jsonl"
        data.write_text(
            "".join(json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in pairs),
            encoding="utf-8",
        )
        config_file = tmp / "config.json"
        config_file.write_text(json.dumps(config.to_dict()), encoding="utf-8")
        command = train_command(
            data, model_spec, out_dir, config_file, config.num_processes, reference_spec
        )
        with (tmp / "stderr.log").open("w+", encoding="utf-8") as stderr:
            proc = subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
                env={
                    **os.environ,
                    "TRANSFORMERS_VERBOSITY": "error",
                    # the ranks read `store:` specs (versions) from the worker's store and cache
                    "PREFLOOP_VAR_DIR": str(settings.VAR_DIR),
                    "PREFLOOP_MODEL_STORE": settings.PREFLOOP_MODEL_STORE,
                },
            )
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    _report(line, on_step)
                status = proc.wait()
            finally:
                _stop(proc)
            if status != 0:
                stderr.seek(0)
                tail = stderr.read()[-3000:]
                raise ParallelTrainingError(
                    f"training on {config.num_processes} processes failed "
                    f"(exit status {status}):\n{tail}"
                )
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    return TrainResult(**metrics)


def _report(line: str, on_step: StepCallback | None) -> None:
    """Pass one progress line of the command on; its other output is ignored."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return
    if on_step is None or not isinstance(row, dict) or set(row) != PROGRESS_KEYS:
        return
    on_step(int(row["step"]), int(row["total"]), float(row["loss"]), row["eta_s"])
