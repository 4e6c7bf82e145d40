"""Concurrent annotators against a real server: throughput, next-task latency, correctness.

Starts gunicorn on a fresh database (SQLite by default, or PostgreSQL with
--db postgres), then N threads act as annotators through the REST API: ask for
the next pair, judge it, repeat until the queue is empty. Prints judgments/s,
completed pairs/s and next-task latency percentiles next to Label Studio's
numbers measured on this machine, and checks the invariants afterwards
(``bench/_rows.py: check_integrity``: no pair over its overlap, no annotator
twice on a pair, every acknowledged judgment stored, no lease left behind).

    .venv/bin/python bench/bench_annotate.py [--annotators 32] [--pairs 400] [--db postgres]

With --sizes (e.g. 1000,100000,1000000) it runs the project-size sweep instead: one annotator's
next and submit latency in projects of each size (bench/queue_sizes.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import (  # noqa: E402
    VIOLATIONS,
    database_env,
    django_call,
    free_port,
    gunicorn,
    migrate,
)

# Label Studio 1.23.2 on this machine, 32 concurrent annotators (see README).
LABEL_STUDIO = {"pairs_per_s": 1.4, "p99_next_s": 43.0}


def annotator(port: int, member: list, project: int, stats: dict, lock: threading.Lock) -> None:
    user_id, token = member
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    while True:
        started = time.monotonic()
        conn.request("GET", f"/api/projects/{project}/next/", headers=headers)
        response = conn.getresponse()
        body = response.read()
        latency = time.monotonic() - started
        with lock:
            stats["next_latency"].append(latency)
        if response.status == 204:
            return
        if response.status != 200:
            with lock:
                stats["errors"].append(f"next {response.status} {body[:200]!r}")
            return
        task = json.loads(body)
        client_id = str(uuid.uuid4())
        payload = json.dumps({"choice": "left", "client_id": client_id, "duration_ms": 1})
        conn.request("POST", f"/api/comparisons/{task['comparison']}/judgments/", payload, headers)
        response = conn.getresponse()
        body = response.read()
        with lock:
            if response.status == 201:
                stats["acknowledged"].append([user_id, task["comparison"], client_id])
            else:
                stats["errors"].append(f"judge {response.status} {body[:200]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    # the Procfile's server
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument(
        "--sizes", help="comma-separated project sizes: run the project-size sweep instead"
    )
    parser.add_argument("--requests", type=int, default=200, help="sweep: next+submit per size")
    parser.add_argument("--warmup", type=int, default=20, help="sweep: untimed steps first")
    parser.add_argument(
        "--strategy",
        default="random",
        choices=["random", "uncertainty", "disagreement", "coverage"],
        help="sweep: the projects' pair selection strategy",
    )
    parser.add_argument(
        "--fixtures", default="/tmp/prefloop-queue-sweep", help="sweep: where fixtures are kept"
    )
    args = parser.parse_args()
    if args.sizes:
        from bench.queue_sizes import sweep

        sweep(args)
        return

    port = args.port or free_port()
    var_dir = Path(tempfile.mkdtemp(prefix="prefloop-bench-"))
    env = database_env(args.db, var_dir)
    migrate(env)
    members = django_call(env, "create_annotators", count=args.annotators)
    project = django_call(
        env, "create_project", name="bench", annotator_ids=[m[0] for m in members],
        pairs=args.pairs, overlap=args.overlap,
    )  # fmt: skip

    with gunicorn(env, port, args.workers, args.threads):
        stats: dict = {"next_latency": [], "acknowledged": [], "errors": []}
        lock = threading.Lock()
        threads = [
            threading.Thread(target=annotator, args=(port, m, project, stats, lock))
            for m in members
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    checks = django_call(
        env, "check_integrity", project_id=project, acknowledged=stats["acknowledged"]
    )
    shutil.rmtree(var_dir, ignore_errors=True)

    lat = sorted(stats["next_latency"])
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    judgments = len(stats["acknowledged"])
    pairs_per_s = checks["complete_pairs"] / elapsed
    print(f"\n{args.annotators} concurrent annotators, {args.pairs} pairs x overlap {args.overlap}, "
          f"database: {args.db}, gunicorn {args.workers}x{args.threads}")  # fmt: skip
    print(f"{'':<22}{'judgments/s':>12}{'pairs/s':>10}{'p50 next (s)':>14}{'p99 next (s)':>14}")
    print(
        f"{'prefloop':<22}{judgments / elapsed:>12.1f}{pairs_per_s:>10.1f}{p50:>14.3f}{p99:>14.3f}"
    )
    print(
        f"{'Label Studio 1.23.2':<22}{'':>12}{LABEL_STUDIO['pairs_per_s']:>10.1f}{'':>14}{LABEL_STUDIO['p99_next_s']:>14.1f}"
    )
    print(f"ratio (pairs/s): {pairs_per_s / LABEL_STUDIO['pairs_per_s']:.0f}x")
    print(f"judgments stored: {checks['judgments']}, acknowledged: {judgments}, "
          f"errors: {len(stats['errors'])}, pairs over their overlap: {checks['over_overlap']}, "
          f"annotators twice on a pair: {checks['twice']}, "
          f"acknowledged but missing: {checks['missing']}, dangling leases: {checks['dangling']}, "
          f"judgment counts out of step: {checks['count_mismatch']}")  # fmt: skip
    for error in stats["errors"][:5]:
        print("  error:", error)
    ok = not stats["errors"] and not any(checks[k] for k in VIOLATIONS)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
