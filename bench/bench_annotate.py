"""Concurrent annotators against a real server: throughput, next-task latency, correctness.

Starts gunicorn on a fresh database (SQLite by default, or PostgreSQL with
--db postgres), then N threads act as annotators through the REST API: ask for
the next pair, judge it, repeat until the queue is empty. Prints judgments/s,
completed pairs/s and next-task latency percentiles next to Label Studio's
numbers measured on this machine, and checks the invariants afterwards (no pair
over its overlap, no annotator twice on a pair, every acknowledged judgment
stored).

    .venv/bin/python bench/bench_annotate.py [--annotators 32] [--pairs 400] [--db postgres]

With --sizes (e.g. 1000,100000,1000000) it runs the project-size sweep instead: one annotator's
next and submit latency in projects of each size (bench/queue_sizes.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Label Studio 1.23.2 on this machine, 32 concurrent annotators (see README).
LABEL_STUDIO = {"pairs_per_s": 1.4, "p99_next_s": 43.0}


def setup_database(env: dict[str, str], args: argparse.Namespace) -> int:
    """Migrate and create the project, annotators and pairs; returns the project id."""
    py = sys.executable
    subprocess.run([py, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    script = f"""
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from annotate.models import Project, Membership
from annotate.datasets.imports import import_records
User = get_user_model()
project = Project.objects.create(name="bench", overlap={args.overlap}, lease_seconds=600)
tokens = []
for i in range({args.annotators}):
    user = User.objects.create(username=f"bench{{i}}")
    Membership.objects.create(project=project, user=user, role="annotator")
    tokens.append(Token.objects.create(user=user).key)
rows = [{{"prompt": f"Prompt {{i}}?", "completion_a": f"A{{i}}", "completion_b": f"B{{i}}"}}
        for i in range({args.pairs})]
import_records(project, "pairs", rows)
print(json.dumps({{"project": project.pk, "tokens": tokens}}))
"""
    out = subprocess.run(
        [py, "manage.py", "shell", "-c", script],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    data = json.loads(out.stdout.strip().splitlines()[-1])
    env["BENCH_TOKENS"] = json.dumps(data["tokens"])
    return int(data["project"])


def wait_for(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/accounts/login/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit("server did not start")


def annotator(port: int, token: str, project: int, stats: dict, lock: threading.Lock) -> None:
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
        payload = json.dumps({"choice": "left", "client_id": str(uuid.uuid4()), "duration_ms": 1})
        conn.request("POST", f"/api/comparisons/{task['comparison']}/judgments/", payload, headers)
        response = conn.getresponse()
        body = response.read()
        with lock:
            if response.status == 201:
                stats["acknowledged"].append(json.loads(body)["id"])
            else:
                stats["errors"].append(f"judge {response.status} {body[:200]!r}")


def verify(env: dict[str, str], acknowledged: list[int], overlap: int) -> dict[str, int]:
    script = """
import json
from collections import Counter
from annotate.models import Judgment
rows = list(Judgment.objects.values_list("pk", "comparison_id", "annotator_id"))
per_pair = Counter(c for _, c, _ in rows)
pairs = Counter((c, a) for _, c, a in rows)
print(json.dumps({"ids": [r[0] for r in rows], "max_per_pair": max(per_pair.values(), default=0),
                  "max_same_annotator": max(pairs.values(), default=0),
                  "complete_pairs": sum(1 for n in per_pair.values() if n >= OVERLAP)}))
""".replace("OVERLAP", str(overlap))
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    data = json.loads(out.stdout.strip().splitlines()[-1])
    stored = set(data.pop("ids"))
    data["acknowledged_missing"] = len(set(acknowledged) - stored)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--annotators", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--port", type=int, default=8877)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--sizes", help="comma-separated project sizes: run the project-size sweep instead"
    )
    parser.add_argument("--requests", type=int, default=200, help="sweep: next+submit per size")
    parser.add_argument("--warmup", type=int, default=20, help="sweep: untimed steps first")
    parser.add_argument(
        "--fixtures", default="/tmp/prefloop-queue-sweep", help="sweep: where fixtures are kept"
    )
    args = parser.parse_args()
    if args.sizes:
        from queue_sizes import sweep

        sweep(args, wait_for)
        return

    var_dir = Path(tempfile.mkdtemp(prefix="prefloop-bench-"))
    env = {
        **os.environ,
        "PREFLOOP_VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "annotate.settings",
    }
    if args.db == "postgres":
        dbname = "prefloop_bench"
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                f"DROP DATABASE IF EXISTS {dbname}",
            ],
            check=True,
        )
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {dbname}"],
            check=True,
        )
        env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{dbname}"
    else:
        env.pop("DATABASE_URL", None)
    project = setup_database(env, args)
    tokens = json.loads(env.pop("BENCH_TOKENS"))

    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "annotate.wsgi", "--bind", f"127.0.0.1:{args.port}",
         "--workers", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        wait_for(args.port)
        stats: dict = {"next_latency": [], "acknowledged": [], "errors": []}
        lock = threading.Lock()
        threads = [
            threading.Thread(target=annotator, args=(args.port, t, project, stats, lock))
            for t in tokens
        ]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    checks = verify(env, stats["acknowledged"], args.overlap)
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
    print(f"judgments stored: {judgments}, errors: {len(stats['errors'])}, "
          f"max annotators on one pair: {checks['max_per_pair']} (overlap {args.overlap}), "
          f"max judgments by one annotator on one pair: {checks['max_same_annotator']}, "
          f"acknowledged but missing: {checks['acknowledged_missing']}")  # fmt: skip
    for error in stats["errors"][:5]:
        print("  error:", error)
    ok = (
        not stats["errors"]
        and checks["max_per_pair"] <= args.overlap
        and checks["max_same_annotator"] <= 1
        and checks["acknowledged_missing"] == 0
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
