"""Project-size sweep: does one annotator's next and submit cost the same at every size?

For each size N a project of N comparisons is built once (bulk inserts, a few minutes at a
million) and kept under ``--fixtures`` (default /tmp/prefloop-queue-sweep): an SQLite file, or a
PostgreSQL template database. Each run copies the pristine fixture, migrates the copy, starts
one gunicorn per size, then one annotator asks for the next pair and judges it ``--requests``
times, taking turns across the sizes so that the machine's load falls on every size alike.

The projects look like a project in its second round: overlap 2, a tenth of the comparisons in
the open round 1 (collecting judgments, so every submit runs the round's trigger check), the
rest from earlier imports, a fifth of those already judged by two other annotators, one in four
hundred a gold pair with its answer; every prompt has four completions and four pairs.
Called by ``bench/bench_annotate.py --sizes``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench._server import free_port, gunicorn, pg_url, psql, server_env

ROOT = Path(__file__).resolve().parent.parent
PAIRS_PER_PROMPT = 4
_BUILD = """
import json, random, uuid
from django.contrib.auth import get_user_model
from django.core.management.color import no_style
from django.db import connection, transaction
from rest_framework.authtoken.models import Token
from annotate.models import (Assignment, Comparison, Completion, Judgment, Membership, Project,
                             Prompt, messages_hash)
from training.models import ModelVersion, ProjectLoop, Round

N, PER_PROMPT, BATCH = {n}, {per_prompt}, 20000
rng = random.Random(N)
cursor = connection.cursor()
if connection.vendor == "sqlite":
    cursor.execute("PRAGMA synchronous=OFF")
User = get_user_model()
project = Project.objects.create(name="sweep", overlap=2, lease_seconds=600)
lead = User.objects.create(username="sweep-lead")
Membership.objects.create(project=project, user=lead, role="lead")
past = [User.objects.create(username=f"past{{i}}") for i in range(2)]
me = User.objects.create(username="sweep0")
for user in (*past, me):
    Membership.objects.create(project=project, user=user, role="annotator")
token = Token.objects.create(user=me).key
v0 = ModelVersion.objects.create(project=project, number=0, spec="demo", state="serving")
ProjectLoop.objects.create(project=project, base_model="demo")
Round.objects.create(project=project, number=1, policy=v0, state="collecting",
                     settings={{"trigger": "all_judged"}})


class Table:
    # Raw multi-row inserts with explicit ids: Django's bulk_create builds a model per row,
    # too slow for a million rows on a busy machine.
    def __init__(self, model, **fixed):
        template = model(**fixed)
        self.fields = [f for f in model._meta.concrete_fields]
        self.defaults = {{f.attname: f.get_db_prep_save(f.pre_save(template, True), connection)
                          for f in self.fields}}
        columns = ", ".join(connection.ops.quote_name(f.column) for f in self.fields)
        marks = ", ".join(["%s"] * len(self.fields))
        self.sql = f"INSERT INTO {{model._meta.db_table}} ({{columns}}) VALUES ({{marks}})"
        self.rows = []
        self.next_id = (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1

    def add(self, **values):
        pk = self.next_id
        self.next_id += 1
        values["id"] = pk
        self.rows.append([values.get(f.attname, self.defaults[f.attname]) for f in self.fields])
        return pk

    def flush(self):
        cursor.executemany(self.sql, self.rows)
        self.rows = []


messages_field = Prompt._meta.get_field("messages")
client_field = Judgment._meta.get_field("client_id")
prompts = Table(Prompt, project=project, messages=[])
completions = Table(Completion)
comparisons = Table(Comparison, project=project)
assignments = Table(Assignment, project=project, left_is_a=True, status="done",
                    lease_expires=project.created_at)
judgments = Table(Judgment, project=project, choice="a", left_is_a=True)
open_from = N - N // 10
made = 0
while made < N:
    with transaction.atomic():
        for _ in range(BATCH // PER_PROMPT):
            i = made // PER_PROMPT
            messages = [{{"role": "user", "content": f"Question {{i}}: what is {{i}} + {{i}}?"}}]
            prompt = prompts.add(messages=messages_field.get_db_prep_save(messages, connection),
                                 content_hash=messages_hash(messages))
            texts = [completions.add(prompt_id=prompt, text=f"Answer {{j}} to prompt {{i}}.")
                     for j in range(PER_PROMPT)]
            for a, b in ((0, 1), (2, 3), (0, 2), (1, 3)):
                gold = made % 400 == 7 and made < open_from
                judged = made < open_from and not gold and rng.random() < 0.2
                pk = comparisons.add(
                    prompt_id=prompt, completion_a_id=texts[a], completion_b_id=texts[b],
                    round=1 if made >= open_from else None, kind="gold" if gold else "train",
                    gold_choice="a" if gold else "", random_key=rng.random(),
                    judgment_count=2 if judged else 0)
                for user in past if judged else ():
                    assignments.add(comparison_id=pk, annotator_id=user.pk)
                    judgments.add(comparison_id=pk, annotator_id=user.pk,
                                  client_id=client_field.get_db_prep_save(uuid.uuid4(), connection))
                made += 1
            if made >= N:
                break
        for table in (prompts, completions, comparisons, assignments, judgments):
            table.flush()
for sql in connection.ops.sequence_reset_sql(
        no_style(), [Prompt, Completion, Comparison, Assignment, Judgment]):
    cursor.execute(sql)
print(json.dumps({{"project": project.pk, "token": token, "comparisons": made}}))
"""


# The client always answers "left", so the gold rule would pause it: 0 never pauses. The
# project's pair selection strategy is set by a save, as a lead's change is.
_SETUP = (
    "from annotate.models import Project; "
    "p = Project.objects.get(name='sweep'); "
    "p.gold_min_accuracy = 0.0; p.pair_selection = {strategy!r}; p.save()"
)


def _manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout


def fixture(n: int, db: str, store: Path) -> dict:
    """Build the pristine project of ``n`` comparisons unless it is there; returns its ids."""
    home = store / f"{db}-{n}"
    marker = home / "fixture.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    url = None
    if db == "postgres":
        name = f"prefloop_queue_sweep_{n}"
        psql(f"DROP DATABASE IF EXISTS {name}")
        psql(f"CREATE DATABASE {name}")
        url = pg_url(name)
    env = server_env(home, url)
    started = time.monotonic()
    _manage(env, "migrate", "-v0")
    out = _manage(env, "shell", "-c", _BUILD.format(n=n, per_prompt=PAIRS_PER_PROMPT))
    data = json.loads(out.strip().splitlines()[-1])
    print(f"built {db} fixture of {n} comparisons in {time.monotonic() - started:.0f} s")
    marker.write_text(json.dumps(data))
    return data


def working_copy(
    n: int, db: str, store: Path, strategy: str = "random"
) -> tuple[dict[str, str], dict]:
    """A fresh, migrated copy of the fixture, its project set to the pair selection
    ``strategy``; returns its environment and ids."""
    data = fixture(n, db, store)
    run_dir = store / f"run-{db}-{n}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    url = None
    if db == "postgres":
        name = f"prefloop_queue_sweep_run_{n}"
        psql(f"DROP DATABASE IF EXISTS {name}")
        psql(f"CREATE DATABASE {name} TEMPLATE prefloop_queue_sweep_{n}")
        # Fresh planner statistics, as autovacuum keeps them on a live database: without them
        # PostgreSQL guesses from a table's size before the bulk load.
        psql("ANALYZE", name)
        url = pg_url(name)
    else:
        shutil.copy(store / f"{db}-{n}" / "prefloop.sqlite3", run_dir / "prefloop.sqlite3")
    env = server_env(run_dir, url)
    started = time.monotonic()
    _manage(env, "migrate", "-v0")
    _manage(env, "shell", "-c", _SETUP.format(strategy=strategy))
    print(f"{db} {n}: copy migrated and set to {strategy} in {time.monotonic() - started:.0f} s")
    return env, data


class Annotator:
    """One annotator's keep-alive connection to one server, with its timings."""

    def __init__(self, port: int, token: str, project: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.project = project
        self.next_s: list[float] = []
        self.submit_s: list[float] = []
        self.errors: list[str] = []

    def _call(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        """One request; a keep-alive connection the server closed meanwhile (gunicorn drops
        idle ones after two seconds, and the sizes take turns) is reopened once."""
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body, self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def step(self, record: bool) -> None:
        started = time.perf_counter()
        status, body = self._call("GET", f"/api/projects/{self.project}/next/")
        took = time.perf_counter() - started
        if status != 200:
            self.errors.append(f"next {status} {body[:200]!r}")
            return
        comparison = json.loads(body)["comparison"]
        payload = json.dumps({"choice": "left", "client_id": str(uuid.uuid4()), "duration_ms": 1})
        started = time.perf_counter()
        status, body = self._call("POST", f"/api/comparisons/{comparison}/judgments/", payload)
        if status != 201:
            self.errors.append(f"judge {status} {body[:200]!r}")
            return
        if record:
            self.next_s.append(took)
            self.submit_s.append(time.perf_counter() - started)


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sweep(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    store = Path(args.fixtures)
    store.mkdir(parents=True, exist_ok=True)
    clients = {}
    with contextlib.ExitStack() as servers:
        copies = [working_copy(n, args.db, store, args.strategy) for n in sizes]
        for i, (n, (env, data)) in enumerate(zip(sizes, copies, strict=True)):
            port = args.port + i if args.port else free_port()
            servers.enter_context(gunicorn(env, port, args.workers, args.threads))
            clients[n] = Annotator(port, data["token"], data["project"])
        for i in range(args.warmup + args.requests):
            for n in sizes:
                clients[n].step(record=i >= args.warmup)
    print(
        f"\nOne annotator, next -> submit x {args.requests} (after {args.warmup} warm-up), "
        f"database: {args.db}, pair selection: {args.strategy}, "
        f"gunicorn {args.workers}x{args.threads}, sizes taking turns"
    )
    print(f"{'comparisons':>12}{'next p50':>10}{'p95':>8}{'submit p50':>12}{'p95':>8}  (ms)")
    base = None
    for n in sizes:
        c = clients[n]
        if c.errors:
            print(f"{n:>12}  errors: {len(c.errors)}, first: {c.errors[0]}")
            continue
        nxt, sub = statistics.median(c.next_s) * 1000, statistics.median(c.submit_s) * 1000
        base = base or (nxt, sub)
        print(
            f"{n:>12}{nxt:>10.1f}{_ms(c.next_s, 0.95):>8.1f}{sub:>12.1f}"
            f"{_ms(c.submit_s, 0.95):>8.1f}   x{nxt / base[0]:.2f} / x{sub / base[1]:.2f}"
        )
    if any(c.errors for c in clients.values()):
        sys.exit(1)
