"""Load on the annotation API: many annotators looping next -> submit against gunicorn.

For each database (PostgreSQL with the production settings, and the embedded defaults:
SQLite with the file-system broker), one gunicorn serves every cell of the table; each cell
is a fresh project with N annotators (their own users, API tokens and memberships) that
loop GET next -> POST submit for ``--duration`` seconds through one asyncio client on the same
machine (loopback only), either as fast as they can ("stress") or one judgment every
``--pace`` seconds each ("paced"). After the time is up each annotator judges the pair it
holds and stops, then the database is checked (``bench/_rows.py: check_integrity``): no pair
over its overlap, nobody twice on a pair, every acknowledged submit stored, no dangling lease.

Prints judgments/s, pairs/s (judgments / overlap), p50/p95/p99 of next and submit in ms,
errors and violations per cell, with the targets beside them; writes the rows as JSON to
``--out``. Exits 1 on any error or violation (not on a missed speed target: that depends on
the machine).

    .venv/bin/python bench/bench_load.py [--db postgres|sqlite|both] [--annotators 1,16,64]
        [--mode stress,paced] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (  # noqa: E402
    ROOT,
    VIOLATIONS,
    database_env,
    django_call,
    free_port,
    gunicorn,
    migrate,
)

# The targets of the load test on 2 cores, client included.
TARGET_STRESS = {"db": "postgres", "annotators": 64, "pairs_per_s": 100.0}
TARGET_PACED = {"annotators": 200, "p99_ms": 100.0}
# How fast one stress annotator can possibly go, for sizing its project (judgments/s): on a fast
# day one annotator of two judged 98 a second on SQLite (a next and a submit of about 4 ms each),
# so this leaves room for a faster machine.
ONE_ANNOTATOR_RATE = 250.0
# Projects get this much more work than the expected rate needs.
HEADROOM = 1.5


@dataclass
class Stats:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    # (annotator id, comparison id, client_id) of every submit answered 2xx
    acknowledged: list[list[Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ran_dry: bool = False


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: bytes | None
) -> tuple[int, bytes, float]:
    headers = {"Authorization": f"Token {token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    started = time.perf_counter()
    async with session.request(method, url, data=body, headers=headers) as response:
        data = await response.read()
    return response.status, data, 1000 * (time.perf_counter() - started)


async def _submit(
    session: aiohttp.ClientSession, base: str, annotator: list[Any], comparison: int, stats: Stats
) -> None:
    """Judge one pair; a request that got no answer is resent with the same client_id."""
    user_id, token = annotator
    client_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "choice": random.choice(["left", "right", "tie"]),
            "client_id": client_id,
            "duration_ms": 4000,
        }
    ).encode()
    url = f"{base}/api/comparisons/{comparison}/judgments/"
    for _attempt in range(3):
        try:
            status, data, ms = await _call(session, "POST", url, token, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors.append(f"submit: {exc!r}")
            continue
        stats.submit_ms.append(ms)
        if status in (200, 201):
            stats.acknowledged.append([user_id, comparison, client_id])
        else:
            stats.errors.append(f"submit {status}: {data[:200]!r}")
        return


async def _annotate(
    session: aiohttp.ClientSession,
    base: str,
    project: int,
    annotator: list[Any],
    deadline: float,
    pace: float | None,
    stats: Stats,
) -> None:
    loop = asyncio.get_running_loop()
    url = f"{base}/api/projects/{project}/next/"
    slot = loop.time()
    if pace:
        # Spread the annotators over one period rather than all asking at once.
        slot += random.uniform(0, pace)
        await asyncio.sleep(slot - loop.time())
    while loop.time() < deadline:
        try:
            status, data, ms = await _call(session, "GET", url, annotator[1], None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            stats.errors.append(f"next: {exc!r}")
            await asyncio.sleep(0.1)
            continue
        stats.next_ms.append(ms)
        if status == 204:
            stats.ran_dry = True
            return
        if status != 200:
            stats.errors.append(f"next {status}: {data[:200]!r}")
            await asyncio.sleep(0.1)
            continue
        await _submit(session, base, annotator, json.loads(data)["comparison"], stats)
        if pace:
            slot += pace
            await asyncio.sleep(max(0.0, slot - loop.time()))


async def load(
    port: int, project: int, annotators: list[list[Any]], duration: float, pace: float | None
) -> tuple[Stats, float]:
    """Run the annotators for ``duration`` seconds; (stats, seconds until the last stopped)."""
    stats = Stats()
    # Close idle connections before gunicorn does (its keep-alive is 2 s), so that a paced
    # annotator never sends on a connection the server is closing.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=1.5)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + duration
        base = f"http://127.0.0.1:{port}"
        await asyncio.gather(
            *(_annotate(session, base, project, a, deadline, pace, stats) for a in annotators)
        )
        return stats, loop.time() - started


class CpuMeter:
    """CPU seconds used while it runs by the web server (gunicorn and its workers), the
    database server's backends for this run (PostgreSQL; SQLite works inside the web server)
    and this client process: what one judgment costs on each side, and how much of the machine
    the run got while other work shared it.

    Processes are polled every ``interval`` seconds, so that a database connection closed
    during the run (``CONN_MAX_AGE``) still counts up to its last poll.
    """

    def __init__(self, server_pid: int, pg_database: str | None, interval: float = 1.0) -> None:
        self.server = psutil.Process(server_pid)
        self.pg_marker = f" {pg_database} " if pg_database else None
        self.interval = interval
        # (side, pid, start time) -> [CPU seconds when first seen, when last seen]
        self.seen: dict[tuple[str, int, float], list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _processes(self) -> Iterator[tuple[str, psutil.Process]]:
        yield "client", psutil.Process()
        yield "web", self.server
        for child in self.server.children(recursive=True):
            yield "web", child
        if self.pg_marker:
            for process in psutil.process_iter(["cmdline"]):
                title = " ".join(process.info["cmdline"] or []) + " "
                if title.startswith("postgres:") and self.pg_marker in title:
                    yield "db", process

    def sample(self, first: bool = False) -> None:
        for side, process in self._processes():
            try:
                times = process.cpu_times()
                key = (side, process.pid, process.create_time())
            except psutil.Error:
                continue
            seconds = times.user + times.system
            # a process started during the run counts from zero
            self.seen.setdefault(key, [seconds if first else 0.0, seconds])[1] = seconds

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> CpuMeter:
        self.sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def used(self) -> dict[str, float]:
        totals = dict.fromkeys(("web", "db", "client"), 0.0)
        for (side, _, _), (first, last) in self.seen.items():
            totals[side] += last - first
        return totals


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def project_size(mode: str, annotators: int, args: argparse.Namespace) -> int:
    """Pairs enough for the cell not to run dry at the rate expected of it (or ``--pairs``)."""
    if args.pairs:
        return int(args.pairs)
    if mode == "paced":
        rate = annotators / args.pace
    else:
        rate = min(args.expect_rate, annotators * ONE_ANNOTATOR_RATE)
    judgments = rate * (args.duration + args.pace) * HEADROOM
    # Each annotator judges a pair at most once: with fewer annotators than the overlap, the
    # pairs bound each annotator's work rather than the overlap's slots.
    return max(50, math.ceil(judgments / min(annotators, args.overlap)))


def _run_async(coroutine: Any) -> Any:
    """``asyncio.run`` in a thread of its own: the caller's thread may already run an event
    loop (a test process that drove a browser through Playwright's sync API does)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_cell(
    env: dict[str, str],
    db: str,
    mode: str,
    n: int,
    pool: list[list[Any]],
    server_pid: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    pairs = project_size(mode, n, args)
    members = pool[:n]
    project = django_call(
        env, "create_project", name=f"load {mode} {n}", annotator_ids=[a[0] for a in members],
        pairs=pairs, overlap=args.overlap,
    )  # fmt: skip
    load_before = os.getloadavg()[0]
    pace = args.pace if mode == "paced" else None
    with CpuMeter(server_pid, args.pg_database if db == "postgres" else None) as meter:
        stats, elapsed = _run_async(load(args.port, project, members, args.duration, pace))
    cpu = meter.used()
    checks = django_call(
        env, "check_integrity", project_id=project, acknowledged=stats.acknowledged
    )
    judgments = len(stats.acknowledged)
    row: dict[str, Any] = {
        "db": db, "mode": mode, "annotators": n, "pairs": pairs, "seconds": round(elapsed, 2),
        "judgments": judgments, "judgments_per_s": judgments / elapsed,
        "pairs_per_s": judgments / args.overlap / elapsed,
        "errors": len(stats.errors), "error_samples": stats.errors[:5],
        "violations": sum(checks[k] for k in VIOLATIONS), "checks": checks,
        "ran_dry": stats.ran_dry, "load_1min": load_before,
        # CPU milliseconds per judgment on each side, and the cores the run used in all
        "cpu_ms_per_judgment": {k: 1000 * v / max(judgments, 1) for k, v in cpu.items()},
        "cores_used": sum(cpu.values()) / elapsed,
    }  # fmt: skip
    for name, values in (("next", stats.next_ms), ("submit", stats.submit_ms)):
        for q in (50, 95, 99):
            row[f"{name}_p{q}_ms"] = percentile(values, q)
    return row


HEADER = (
    f"{'db':<9}{'mode':<7}{'N':>4}{'pairs':>7}{'judg/s':>8}{'pairs/s':>8}"
    f"{'next p50/p95/p99 ms':>22}{'submit p50/p95/p99 ms':>24}{'err':>5}{'viol':>5}{'load':>6}"
    f"{'cores':>6}{'CPU ms/judgment web/db/client':>31}"
)


def format_row(row: dict[str, Any]) -> str:
    def lat(name: str) -> str:
        return "/".join(f"{row[f'{name}_p{q}_ms']:.0f}" for q in (50, 95, 99))

    dry = "  ran dry" if row["ran_dry"] else ""
    cpu = "/".join(f"{row['cpu_ms_per_judgment'][k]:.1f}" for k in ("web", "db", "client"))
    return (
        f"{row['db']:<9}{row['mode']:<7}{row['annotators']:>4}{row['pairs']:>7}"
        f"{row['judgments_per_s']:>8.1f}{row['pairs_per_s']:>8.1f}{lat('next'):>22}"
        f"{lat('submit'):>24}{row['errors']:>5}{row['violations']:>5}{row['load_1min']:>6.1f}"
        f"{row['cores_used']:>6.2f}{cpu:>31}{dry}"
    )


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if (row["mode"], row["db"], row["annotators"]) == (
            "stress",
            TARGET_STRESS["db"],
            TARGET_STRESS["annotators"],
        ):
            met = row["pairs_per_s"] >= TARGET_STRESS["pairs_per_s"]
            lines.append(
                f"target: stress, 64 annotators, PostgreSQL >= 100 pairs/s: "
                f"{row['pairs_per_s']:.1f} ({'met' if met else 'missed'})"
            )
        if row["mode"] == "paced" and row["annotators"] == TARGET_PACED["annotators"]:
            worst = max(row["next_p99_ms"], row["submit_p99_ms"])
            met = worst < TARGET_PACED["p99_ms"]
            lines.append(
                f"target: paced, 200 annotators, {row['db']}: p99 < 100 ms for next and submit: "
                f"{row['next_p99_ms']:.0f} / {row['submit_p99_ms']:.0f} ms "
                f"({'met' if met else 'missed'})"
            )
    clean = all(r["errors"] == 0 and r["violations"] == 0 for r in rows)
    lines.append(
        f"target: zero errors and zero violations everywhere: {'met' if clean else 'missed'}"
    )
    return lines


def run_database(db: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    var_dir = Path(tempfile.mkdtemp(prefix=f"prefloop-bench-load-{db}-"))
    rows = []
    try:
        env = database_env(db, var_dir, pg_database=args.pg_database, redis=args.redis)
        migrate(env)
        pool = django_call(env, "create_annotators", count=max(args.annotators), prefix="load")
        extra = ["--keep-alive", "2"]
        with gunicorn(env, args.port, args.workers, args.threads, *extra) as server:
            for mode in args.mode:
                for n in args.annotators:
                    row = run_cell(env, db, mode, n, pool, server.pid, args)
                    rows.append(row)
                    print(format_row(row), flush=True)
                    for error in row["error_samples"]:
                        print("    error:", error, flush=True)
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    return rows


def _csv(kind: type) -> Any:
    return lambda text: [kind(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--annotators", type=_csv(int), default=[1, 16, 64, 200, 256])
    parser.add_argument("--mode", type=_csv(str), default=["stress", "paced"])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per cell")
    parser.add_argument("--pace", type=float, default=4.0, help="seconds per judgment, paced")
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument(
        "--expect-rate", type=float, default=250.0,
        help="judgments/s the server may reach under stress, for sizing the projects",
    )  # fmt: skip
    parser.add_argument(
        "--pairs", type=int, default=0,
        help="pairs in each cell's project (default: sized from --duration and --expect-rate)",
    )  # fmt: skip
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    # the Procfile's server
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pg-database", default="prefloop_bench_load")
    parser.add_argument(
        "--redis", default=None,
        help="Redis URL for the broker and cache of the PostgreSQL run (redis://127.0.0.1:6379/0)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-load" / "results.json")
    args = parser.parse_args(argv)
    args.port = args.port or free_port()
    unknown = set(args.mode) - {"stress", "paced"}
    if unknown:
        parser.error(f"--mode: unknown {', '.join(sorted(unknown))} (stress, paced)")
    if not args.annotators or min(args.annotators) < 1:
        parser.error("--annotators: a comma-separated list of counts >= 1")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dbs = ["postgres", "sqlite"] if args.db == "both" else [args.db]
    print(
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; gunicorn {args.workers} workers x "
        f"{args.threads} threads; overlap {args.overlap}; {args.duration:g} s per cell; "
        f"paced: one judgment per {args.pace:g} s each",
        flush=True,
    )
    print(HEADER, flush=True)
    rows = []
    for db in dbs:
        rows += run_database(db, args)
    for line in target_lines(rows):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1)
    )
    print(f"rows written to {args.out}")
    clean = all(r["errors"] == 0 and r["violations"] == 0 for r in rows)
    return 0 if clean else 1


if __name__ == "__main__":
    # Stopped from outside, still stop the server and remove the run's files.
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
