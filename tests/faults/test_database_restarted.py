"""PostgreSQL restarted while annotators judge.

The web app runs on a private PostgreSQL that the test stops for a few seconds and starts
again, under load and without touching the app. While the database is away the API answers
503 with a JSON body (never an HTML 500), clients retry, and once it is back the same
gunicorn workers serve again: their connections are checked and reopened, not kept broken.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlencode

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


def _login(port: int, csrf: tuple[str, str] | None = None) -> tuple[int, str, str]:
    """GET the login page, or POST it with (cookie, form token) from an earlier GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    if csrf is None:
        conn.request("GET", "/accounts/login/")
    else:
        body = urlencode({"csrfmiddlewaretoken": csrf[1], "username": "x", "password": "y"})
        headers = {"Cookie": f"csrftoken={csrf[0]}",
                   "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
        conn.request("POST", "/accounts/login/", body, headers)
    response = conn.getresponse()
    page = response.read().decode()
    cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie", ""))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    if csrf is None:
        assert cookie and token, page[:500]
        return response.status, cookie.group(1), token.group(1)
    return response.status, response.getheader("Content-Type", ""), page


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings", **env},
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

    _, cookie, token = _login(port)
    team.wait_until_judged(20)
    private_postgres.stop("fast")
    status, content_type, page = _login(port, (cookie, token))  # a page, not the API
    time.sleep(3)
    private_postgres.start()
    outcomes = team.join()

    assert sorted(worker_pids(server)) == workers, "the app was restarted"
    assert status == 503 and content_type.startswith("text/html"), (status, page[:500])
    assert "database is unavailable" in page
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
