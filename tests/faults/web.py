"""The web app under gunicorn, and annotators that keep judging through its faults.

An annotator asks for the next pair and judges it, over and over, until the queue is empty.
Every annotator prefers the completion whose text sorts first, whichever side it is shown on,
so the annotators of a pair agree and every pair has a majority (a round can train on it).
When the connection breaks or the server answers 503 it waits a moment and asks again; a
judgment is resent with the same ``client_id`` until the server acknowledges it, so a retried
submit must never count twice. Every answer that is not a success is kept for the test to read.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conftest import Process
from .instances import free_port

RETRY_PAUSE = 0.2


def start_web(
    processes: Any, env: dict[str, str], *, workers: int = 2, timeout: float = 90
) -> tuple[Process, int]:
    """gunicorn with ``workers`` workers on a free port, answering; returns it and the port."""
    port = free_port()
    server = processes(
        [sys.executable, "-m", "gunicorn", "annotate.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", "4", "--worker-class", "gthread",
         "--timeout", "60", "--graceful-timeout", "5"],
        env,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/accounts/login/")
            if conn.getresponse().status == 200:
                return server, port
        except OSError:
            pass
        if not server.alive:
            break
        time.sleep(0.3)
    raise AssertionError(f"gunicorn did not answer:\n{server.output()[-4000:]}")


def worker_pids(server: Process) -> list[int]:
    """The gunicorn master's worker processes."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in children]


@dataclass
class Outcomes:
    """What the annotators saw, shared by their threads."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # client_id -> comparison
    failures: list[tuple[str, int, str, str]] = field(default_factory=list)
    connection_errors: int = 0
    resent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, what: str, status: int, content_type: str, body: bytes) -> None:
        with self.lock:
            self.failures.append((what, status, content_type, body[:300].decode(errors="replace")))

    def server_errors(self) -> list[tuple[str, int, str, str]]:
        return [f for f in self.failures if f[1] >= 500]


def preferred_side(task: dict[str, Any]) -> str:
    """The side showing the completion whose text sorts first (left when both read the same)."""
    return "right" if task["right"]["text"] < task["left"]["text"] else "left"


class Annotator(threading.Thread):
    def __init__(
        self, port: int, token: str, project_id: int, outcomes: Outcomes, deadline: float
    ) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.project_id = project_id
        self.outcomes = outcomes
        self.deadline = deadline
        self.conn: http.client.HTTPConnection | None = None
        self.judged = 0

    def _call(self, method: str, path: str, body: str | None) -> tuple[int, str, bytes] | None:
        """One request; None when the connection broke (the caller retries)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body, self.headers)
            response = self.conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read()
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            with self.outcomes.lock:
                self.outcomes.connection_errors += 1
            time.sleep(RETRY_PAUSE)
            return None

    def _until_answered(self, what: str, method: str, path: str, body: str | None = None) -> Any:
        """Send until the server answers something other than 503; None past the deadline."""
        tries = 0
        while time.monotonic() < self.deadline:
            tries += 1
            if tries == 2 and method == "POST":
                with self.outcomes.lock:
                    self.outcomes.resent += 1
            answer = self._call(method, path, body)
            if answer is None:
                continue
            status, content_type, data = answer
            if status == 503:
                self.outcomes.fail(what, status, content_type, data)
                time.sleep(RETRY_PAUSE)
                continue
            return answer
        return None

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            answer = self._until_answered("next", "GET", f"/api/projects/{self.project_id}/next/")
            if answer is None or answer[0] == 204:
                return
            status, content_type, data = answer
            if status != 200:
                self.outcomes.fail("next", status, content_type, data)
                time.sleep(RETRY_PAUSE)
                continue
            task = json.loads(data)
            self._judge(task["comparison"], preferred_side(task))

    def _judge(self, comparison: int, choice: str) -> None:
        client_id = str(uuid.uuid4())
        body = json.dumps({"choice": choice, "client_id": client_id, "duration_ms": 1})
        path = f"/api/comparisons/{comparison}/judgments/"
        answer = self._until_answered("judge", "POST", path, body)
        if answer is None:
            return
        status, content_type, data = answer
        if status in (200, 201):
            with self.outcomes.lock:
                self.outcomes.acknowledged[client_id] = comparison
            self.judged += 1
        else:
            self.outcomes.fail("judge", status, content_type, data)


class Team:
    """One annotator thread per token, judging until the queue is empty or time is up."""

    def __init__(self, port: int, tokens: list[str], project_id: int, seconds: float) -> None:
        self.outcomes = Outcomes()
        deadline = time.monotonic() + seconds
        self.threads = [Annotator(port, t, project_id, self.outcomes, deadline) for t in tokens]
        for thread in self.threads:
            thread.start()

    @property
    def judged(self) -> int:
        return sum(t.judged for t in self.threads)

    def wait_until_judged(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.judged < n and time.monotonic() < deadline:
            if not any(t.is_alive() for t in self.threads):
                return
            time.sleep(0.05)

    def join(self) -> Outcomes:
        for thread in self.threads:
            thread.join()
        return self.outcomes
