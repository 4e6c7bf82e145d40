"""The app under gunicorn, as the Procfile runs it, on the test database, with raw clients.

The server process reaches the test database through DATABASE_URL, so tests that use it commit
their rows (``django_db(transaction=True)``). A test can load the app through a module of its own
(``app``), which patches the app in that process before it serves.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from tests.processes import database_url, free_port

ROOT = Path(__file__).resolve().parents[2]


class Gunicorn:
    def __init__(
        self, var_dir: Path, *, app: str = "annotate.wsgi:application", **env: str
    ) -> None:
        self.var_dir = var_dir
        self.port = free_port()
        self.log = var_dir / "gunicorn.log"
        var_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{self.port}",
             "--workers", "1", "--threads", "2", "--pythonpath", str(var_dir)],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings",
                 "DATABASE_URL": database_url(), "PREFLOOP_VAR_DIR": str(var_dir),
                 # the same key, so that a session made by the test's client holds there
                 "SECRET_KEY": settings.SECRET_KEY, **env},
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not listen in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def http11(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        """The status and whole body of an HTTP/1.1 response; raises if it did not end
        cleanly."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def http10_get(self, path: str, headers: dict[str, str]) -> bytes:
        """An HTTP/1.0 GET, read to the end of the connection (its only framing); raises if the
        connection did not end cleanly."""
        lines = [
            f"GET {path} HTTP/1.0",
            "Host: 127.0.0.1",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        received = bytearray()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            while chunk := sock.recv(1 << 16):
                received += chunk
        return bytes(received)
