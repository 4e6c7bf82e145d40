"""PostgreSQL restarted while annotators judge.

The web app runs on a private PostgreSQL that the test stops for a few seconds and starts
again, under load and without touching the app. While the database is away the API answers
503 with a JSON body (never an HTML 500), clients retry, and once it is back the same
gunicorn workers serve again: their connections are checked and reopened, not kept broken.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable

import psycopg
import pytest

from .conftest import ROOT, Process
from .instances import Postgres
from .integrity import assert_integrity
from .web import Team, start_web, worker_pids

pytestmark = [pytest.mark.slow]

PAIRS, ANNOTATORS, OVERLAP = 150, 4, 2
SEED = f"""
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from annotate.datasets.imports import import_records
from annotate.models import Membership, Project
project = Project.objects.create(name="faults", overlap={OVERLAP}, lease_seconds=600)
tokens = []
for i in range({ANNOTATORS}):
    user = get_user_model().objects.create(username=f"judge{{project.pk}}-{{i}}")
    Membership.objects.create(project=project, user=user, role="annotator")
    tokens.append(Token.objects.create(user=user).key)
rows = [{{"prompt": f"Prompt {{i}}?", "completion_a": f"A {{i}}", "completion_b": f"B {{i}}"}}
        for i in range({PAIRS})]
import_records(project, "pairs", rows)
print(json.dumps({{"project": project.pk, "tokens": tokens}}))
"""


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "annotate.settings", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="session")
def app_database(private_postgres: Postgres) -> str:
    """A migrated database of the app on the private server; its URL."""
    private_postgres.create_database("prefloop_app")
    url = private_postgres.url("prefloop_app")
    _manage({"DATABASE_URL": url}, "migrate", "-v0")
    return url


def test_the_app_answers_503_while_the_database_restarts_and_recovers_by_itself(
    processes: Callable[..., Process], private_postgres: Postgres, app_database: str
) -> None:
    env = {"DATABASE_URL": app_database, "DB_CONN_MAX_AGE": "60"}
    seeded = json.loads(_manage(env, "shell", "-c", SEED).strip().splitlines()[-1])
    project_id, tokens = seeded["project"], seeded["tokens"]
    server, port = start_web(processes, env)
    workers = sorted(worker_pids(server))
    team = Team(port, tokens, project_id, seconds=150)

    team.wait_until_judged(20)
    private_postgres.stop("fast")
    time.sleep(3)
    private_postgres.start()
    outcomes = team.join()

    assert sorted(worker_pids(server)) == workers, "the app was restarted"
    unavailable = [f for f in outcomes.failures if f[1] == 503]
    assert unavailable, "no request met the outage"
    for what, status, content_type, body in outcomes.failures:
        assert status == 503 and content_type == "application/json", (what, status, body)
        assert "database" in json.loads(body)["detail"].lower()
    with psycopg.connect(app_database) as conn, conn.cursor() as cursor:
        assert_integrity(cursor, project_id, acknowledged=outcomes.acknowledged)
        # every pair judged to its overlap (hidden repeats come on top of the pairs)
        cursor.execute(
            "SELECT COUNT(*) FROM annotate_comparison "
            "WHERE project_id = %s AND kind = 'train' AND judgment_count < %s",
            [project_id, OVERLAP],
        )
        assert cursor.fetchone() == (0,)
    assert len(outcomes.acknowledged) >= PAIRS * OVERLAP
