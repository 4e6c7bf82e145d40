"""Two worker machines that share only the database, the broker and a model store directory.

Each worker has its own var directory (PREFLOOP_VAR_DIR): one trains (queues default and train),
the other generates (queue generate) and then serves with ``serve_model``. A version trained by
the first reaches the second only through the store. The embedded broker lives in each var
directory, so this runs in the service-backed suite (PostgreSQL + Redis), as .ci/run does.
"""

from __future__ import annotations

import http.client
import json
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

from annotate.models import Comparison, Project
from tests.processes import database_url, free_port
from training import services
from training.core.store import MANIFEST
from training.models import ModelVersion, Round

from .conftest import make_loop_project
from .test_worker import ROOT

pytestmark = [pytest.mark.services, pytest.mark.slow]


class Machine:
    """A process with a var directory of its own and the shared store."""

    def __init__(self, name: str, var_dir: Path, store: Path, args: list[str]) -> None:
        self.var_dir = var_dir
        self.log = var_dir / f"{name}.log"
        var_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "annotate.settings",
                "DATABASE_URL": database_url(),
                "PREFLOOP_VAR_DIR": str(var_dir),
                "PREFLOOP_MODEL_STORE": str(store),
            },
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _worker_args(queues: str) -> list[str]:
    return ["-m", "celery", "-A", "annotate", "worker", "--pool", "solo", "--queues", queues,
            "--hostname", f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@%h",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip"]  # fmt: skip


@pytest.fixture
def machines(tmp_path: Path, settings: Any) -> Iterator[dict[str, Any]]:
    store = tmp_path / "store"
    store.mkdir()
    settings.VAR_DIR = tmp_path / "web"
    settings.PREFLOOP_MODEL_STORE = str(store)
    started: dict[str, Any] = {"store": store}
    started["trainer"] = Machine("trainer", tmp_path / "a", store, _worker_args("default,train"))
    started["generator"] = Machine("generator", tmp_path / "b", store, _worker_args("generate"))
    yield started
    for machine in started.values():
        if isinstance(machine, Machine):
            machine.stop()


def _wait(
    what: str, check: Callable[[], bool], machines: dict[str, Any], timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    logs = "\n".join(
        f"--- {name}:\n{m.output()[-3000:]}"
        for name, m in machines.items()
        if isinstance(m, Machine)
    )
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def _ask(port: int, model: str, var_dir: Path) -> dict[str, Any]:
    """One answer from the server, with the key it generated into its var directory."""
    key = (var_dir / "serve_api_key").read_text().strip()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    conn.request("POST", "/v1/chat/completions", json.dumps(body), headers)
    response = conn.getresponse()
    data: dict[str, Any] = json.loads(response.read())
    assert response.status == 200, data
    return data


@pytest.mark.django_db(transaction=True)
def test_a_version_trained_on_one_machine_is_generated_from_and_served_by_another(
    machines: dict[str, Any], tiny_model_dir: Path
) -> None:
    project: Project = make_loop_project(tiny_model_dir)
    project.slug = f"store-{uuid.uuid4().hex[:10]}"
    project.save(update_fields=["slug"])
    trainer, generator, store = machines["trainer"], machines["generator"], machines["store"]

    loop_round = services.start_round(project)
    _wait("sampling", lambda: Round.objects.get(pk=loop_round.pk).state == "collecting", machines)
    services.simulate_annotators(project, "shorter", annotators=2, noise=0.0)
    _wait("promotion", lambda: Round.objects.get(pk=loop_round.pk).state == "promoted", machines)

    v1 = ModelVersion.objects.get(trained_in=loop_round)
    key = f"{project.slug}/v1"
    assert v1.spec == f"store:{key}" and v1.store_key == key
    assert (store / key / MANIFEST).is_file()
    assert (trainer.var_dir / "models" / key / MANIFEST).is_file()
    assert "Task training.tasks.train_round[" in trainer.output()
    assert "Task training.tasks.train_round[" not in generator.output()

    # The generating machine samples round 2 from v1, which it only has from the store.
    _wait(
        "round 2 sampling",
        lambda: Round.objects.filter(project=project, number=2, state="collecting").exists(),
        machines,
    )
    second = Comparison.objects.filter(project=project, round=2, kind="train")
    assert second.exists()
    assert {c.completion_a.model_version_id for c in second} == {v1.pk}
    cached = generator.var_dir / "models" / key
    assert (cached / MANIFEST).read_bytes() == (store / key / MANIFEST).read_bytes()
    assert "Task training.tasks.generate_round[" in generator.output()
    assert "Task training.tasks.generate_round[" not in trainer.output()

    # And serves it, from its own var directory.
    port = free_port()
    machines["server"] = server = Machine(
        "server", generator.var_dir, store, ["manage.py", "serve_model", "--port", str(port)]
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            answer = _ask(port, project.slug, server.var_dir)
            break
        except (ConnectionError, OSError):
            if time.monotonic() > deadline or server.process.poll() is not None:
                pytest.fail(f"serve_model did not answer:\n{server.output()[-3000:]}")
            time.sleep(0.5)
    assert answer["model"] == f"{project.slug}:v1"
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert services.serving_version(project).pk == v1.pk
