"""Rounds through a real `celery worker` process (not eager), on the configured broker.

On the embedded defaults that is the file-system broker and the SQLite test database file; in
the service-backed run it is Redis and PostgreSQL. The worker is pointed at the test database
through DATABASE_URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from annotate.models import Comparison, Judgment, Project
from tests.processes import database_url
from training import services
from training.models import ModelVersion, ProjectLoop, Round, TrainingRun

from .conftest import make_loop_project

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self) -> None:
        self.log = ROOT / "var" / f"test-worker-{uuid.uuid4().hex[:8]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "annotate", "worker", "--pool", "solo",
             "--queues", "default,generate,train", "--hostname", f"loop-{uuid.uuid4().hex[:6]}@%h",
             "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings",
                 "DATABASE_URL": database_url()},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.stop()
    w.log.unlink(missing_ok=True)


@pytest.fixture
def worker_project(transactional_db: Any, tiny_model_dir: Path) -> Iterator[Project]:
    # The worker reads settings.VAR_DIR from the environment, so versions go to the real
    # var/models under a slug of their own, removed afterwards.
    project = make_loop_project(tiny_model_dir)
    project.slug = f"loop-{uuid.uuid4().hex[:10]}"
    project.save(update_fields=["slug"])
    yield project
    shutil.rmtree(services.models_dir(project), ignore_errors=True)


def _wait(what: str, check: Callable[[], bool], worker: Worker, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if worker.process is not None and worker.process.poll() is not None:
            break
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}; worker log:\n{worker.output()[-4000:]}")


def _state(round_id: int) -> str:
    return Round.objects.get(pk=round_id).state


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_runs_a_full_round_through_a_worker(worker: Worker, worker_project: Project) -> None:
    worker.start()
    loop_round = services.start_round(worker_project)
    _wait("sampling", lambda: _state(loop_round.pk) == Round.State.COLLECTING, worker)
    # the judgments' commit fires the trigger, which queues training
    services.simulate_annotators(worker_project, "shorter", annotators=2, noise=0.0)
    _wait("promotion", lambda: _state(loop_round.pk) == Round.State.PROMOTED, worker)
    v1 = ModelVersion.objects.get(trained_in=loop_round)
    assert v1.state == ModelVersion.State.SERVING
    assert TrainingRun.objects.get(round=loop_round).losses
    # the next round starts by itself and samples from v1
    _wait(
        "round 2 sampling",
        lambda: Round.objects.filter(
            project=worker_project, number=2, state=Round.State.COLLECTING
        ).exists(),
        worker,
    )
    second = Comparison.objects.filter(project=worker_project, round=2, kind="train")
    assert second.exists()
    assert {c.completion_a.model_version_id for c in second} == {v1.pk}
    out = worker.output()
    assert "training.tasks.generate_round" in out and "training.tasks.train_round" in out


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_survives_a_worker_killed_during_training(
    worker: Worker, worker_project: Project
) -> None:
    # many epochs, so that training is still running when the worker is killed
    slow = {**ProjectLoop.of(worker_project).settings, "auto_next_round": False}
    slow["dpo"] = {**slow["dpo"], "epochs": 400}
    ProjectLoop.store(worker_project, settings=slow)
    worker.start()
    loop_round = services.start_round(worker_project)
    _wait("sampling", lambda: _state(loop_round.pk) == Round.State.COLLECTING, worker)
    services.simulate_annotators(worker_project, "shorter", annotators=1, noise=0.0)
    judgments = Judgment.objects.filter(project=worker_project).count()
    _wait(
        "training steps",
        lambda: TrainingRun.objects.filter(round=loop_round, state="running", step__gte=2).exists(),
        worker,
    )
    worker.kill()

    run = TrainingRun.objects.get(round=loop_round)
    assert run.is_lost()
    assert not ModelVersion.objects.filter(trained_in=loop_round).exists()
    assert services.serving_version(worker_project).number == 0
    assert not (services.models_dir(worker_project) / f"v{run.version_number}").exists()
    assert Judgment.objects.filter(project=worker_project).count() == judgments

    # the retry trains again (briefly this time) on a fresh worker
    fast = dict(loop_round.settings)
    fast["dpo"] = {**fast["dpo"], "epochs": 1}
    Round.objects.filter(pk=loop_round.pk).update(settings=fast)
    services.retry(Round.objects.get(pk=loop_round.pk))
    assert TrainingRun.objects.get(round=loop_round, attempt=1).state == TrainingRun.State.FAILED
    second = Worker()
    second.start()
    try:
        _wait(
            "promotion after retry", lambda: _state(loop_round.pk) == Round.State.PROMOTED, second
        )
    finally:
        second.stop()
        second.log.unlink(missing_ok=True)
    assert ModelVersion.objects.get(trained_in=loop_round).number == run.version_number
    assert ModelVersion.objects.filter(project=worker_project, state="serving").count() == 1
