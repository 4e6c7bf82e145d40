"""Fixtures of the fault tests: private servers, a tiny model, workers that can be killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from annotate.models import Project
from tests.loop.conftest import make_loop_project, save_loop_model

from .instances import Postgres, Redis, postgres_missing, redis_missing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[Postgres]:
    missing = postgres_missing()
    if missing:
        pytest.skip(f"no private PostgreSQL: {missing}")
    server = Postgres()
    yield server
    server.destroy()


@pytest.fixture
def private_redis() -> Iterator[Redis]:
    missing = redis_missing()
    if missing:
        pytest.skip(f"no private Redis: {missing}")
    server = Redis()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_loop_model(tmp_path_factory.mktemp("models") / "tiny")


class Process:
    """A child process in a session of its own, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings", **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def worker_args(hold: tuple[str, Path] | None = None) -> list[str]:
    """A solo-pool worker on every queue; with ``hold``, one that stops at that point."""
    celery = ["worker", "--pool", "solo", "--queues", "default,generate,train",
              "--hostname", f"faults-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO",
              "--without-mingle", "--without-gossip"]  # fmt: skip
    if hold is None:
        return [sys.executable, "-m", "celery", "-A", "annotate", *celery]
    point, mark = hold
    return [sys.executable, "-m", "tests.faults.held_worker", point, str(mark), "-A", "annotate",
            *celery]  # fmt: skip


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start processes (``start(args, env)``) that are killed when the test ends."""
    started: list[Process] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(args, env or {}, tmp_path / f"process-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def wait_for(what: str, check: Callable[[], bool], *watched: Process, timeout: float = 180) -> None:
    """Poll ``check`` until it holds; fail with the logs of ``watched`` if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if any(not p.alive for p in watched):
            break
        time.sleep(0.3)
    logs = "\n".join(f"--- {p.log.name}:\n{p.output()[-4000:]}" for p in watched)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def var_dir(tmp_path: Path, settings: Any) -> Path:
    """Model versions of this test go under a private directory."""
    settings.VAR_DIR = tmp_path / "var"
    return settings.VAR_DIR


@pytest.fixture
def loop_project(db: Any, tiny_model_dir: Path, var_dir: Path) -> Project:
    return make_loop_project(tiny_model_dir)
