"""What the API benchmarks share: a fresh database, calls into Django, gunicorn on loopback.

The benchmark processes themselves never import Django: rows are created and checked by
``bench/_rows.py`` run inside ``manage.py shell`` (``django_call``), against the same
environment the server gets, so SQLite and PostgreSQL runs go through one code path.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The counts of ``bench._rows.check_integrity`` that must all be zero after a run.
VIOLATIONS = ("over_overlap", "twice", "count_mismatch", "missing", "dangling")


def server_env(
    var_dir: Path, database_url: str | None = None, *, redis: str | None = None
) -> dict[str, str]:
    """The environment of a server with production settings (``DEBUG`` off) on an existing
    database: ``database_url``, or the embedded defaults (SQLite file and file-system broker
    under ``var_dir``) when None. ``redis``: a Redis URL for the broker, results and cache."""
    env = {
        **os.environ,
        "PREFLOOP_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "annotate.settings",
    }
    for name in (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "PREFLOOP_CACHE_URL",
    ):
        env.pop(name, None)
    env["DEBUG"] = "0"
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis:
        env["CELERY_BROKER_URL"] = env["CELERY_RESULT_BACKEND"] = redis
        env["PREFLOOP_CACHE_URL"] = redis
    return env


def pg_url(name: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql], check=True
    )


def database_env(
    db: str, var_dir: Path, *, pg_database: str = "prefloop_bench", redis: str | None = None
) -> dict[str, str]:
    """The environment of a server on a fresh database under ``var_dir``.

    ``db``: "sqlite" (the embedded defaults: SQLite file and file-system broker under
    ``var_dir``) or "postgres" (``pg_database`` on 127.0.0.1 is dropped and created again).
    ``redis``: a Redis URL for the broker, the results and the cache (PostgreSQL runs only).
    """
    if db == "sqlite":
        return server_env(var_dir)
    if db != "postgres":
        raise ValueError(f"unknown database {db!r}")
    psql(f"DROP DATABASE IF EXISTS {pg_database}")
    psql(f"CREATE DATABASE {pg_database}")
    return server_env(var_dir, pg_url(pg_database), redis=redis)


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def django_call(env: dict[str, str], function: str, **kwargs: Any) -> Any:
    """``bench._rows.<function>(**kwargs)`` in a Django process on ``env``; its JSON result.

    Arguments and result travel through files, so they may be large (every acknowledged
    judgment of a run).
    """
    with tempfile.TemporaryDirectory(prefix="prefloop-call-") as tmp:
        args, result = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args.write_text(json.dumps(kwargs))
        code = (
            "import json, pathlib; from bench import _rows; "
            f"r = _rows.{function}(**json.loads(pathlib.Path({str(args)!r}).read_text())); "
            f"pathlib.Path({str(result)!r}).write_text(json.dumps(r))"
        )
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-v0", "-c", code],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return json.loads(result.read_text())


def free_port() -> int:
    """A port nothing listens on now, so that runs beside each other never meet."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, timeout: float = 60, server: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/accounts/login/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("server did not start")


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], port: int, workers: int, threads: int, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn serving the app on 127.0.0.1:``port`` until the block ends."""
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "annotate.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads), "--log-level", "warning", *extra],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        wait_for(port, server=server)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)
