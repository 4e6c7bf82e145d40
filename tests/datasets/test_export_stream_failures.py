"""A streamed export that fails after its first bytes went out must not reach the client as a
complete file: the connection is broken off, under gunicorn as the Procfile runs it.

The server loads the app through a module that makes JSONL and CSV exports fail at their 21st
row, with small chunks so that 20 rows are already on the wire by then; the judgments export is
left whole, to show what a clean end looks like to the same clients.
"""

from __future__ import annotations

import http.client

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from .conftest import jsonl_rows, vote
from .server import Gunicorn

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BREAKING_APP = """
from annotate.wsgi import application
from annotate.datasets import exporters

exporters.CHUNK_BYTES = 256
_rows = exporters.export_rows


def _breaking(project, fmt, options, stats=None):
    for n, row in enumerate(_rows(project, fmt, options, stats)):
        if n == 20 and fmt != "judgments":
            raise RuntimeError("the database went away")
        yield row


exporters.export_rows = _breaking
"""

PAIRS = 30


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("stream-var")
    (var_dir / "breaking_app.py").write_text(BREAKING_APP)
    gunicorn = Gunicorn(var_dir, app="breaking_app:application")
    yield gunicorn
    gunicorn.stop()


@pytest.fixture
def judged(team):
    for comparison in team.pairs(PAIRS):
        vote(comparison, "a", team.alice)
    return team


def _auth(team) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=team.lead)
    return {"Authorization": f"Token {token.key}"}


@pytest.mark.parametrize("fmt", ["trl", "csv"])
def test_it_breaks_off_a_chunked_export_that_fails_midway(server, judged, fmt):
    path = f"/api/projects/{judged.project.pk}/export/?format={fmt}"
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        server.http11("GET", path, _auth(judged))
    assert f"Streamed export (project {judged.project.pk}, {fmt}) failed after" in server.output()
    assert "RuntimeError: the database went away" in server.output()


@pytest.mark.parametrize("fmt", ["trl", "csv"])
def test_it_resets_a_connection_framed_export_that_fails_midway(server, judged, fmt):
    # HTTP/1.0 (or a proxy speaking it to the app) has no chunks: the body ends where the
    # connection does, so an orderly close would pass for the whole file
    path = f"/api/projects/{judged.project.pk}/export/?format={fmt}"
    with pytest.raises(ConnectionResetError):
        server.http10_get(path, _auth(judged))


def test_the_browser_download_breaks_off_as_well(server, judged):
    client = Client()
    client.force_login(judged.lead)
    cookie = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
    path = (
        f"/projects/{judged.project.pk}/datasets/export/"
        "?format=trl&bundle=file&aggregation=majority&weight=uniform"
    )
    with pytest.raises(ConnectionResetError):
        server.http10_get(path, cookie)
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        server.http11("GET", path, cookie)


def test_a_whole_export_still_ends_cleanly_for_both_framings(server, judged):
    path = f"/api/projects/{judged.project.pk}/export/?format=judgments"
    status, body = server.http11("GET", path, _auth(judged))
    assert status == 200 and len(jsonl_rows(body)) == PAIRS
    raw = server.http10_get(path, _auth(judged))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    assert len(jsonl_rows(body)) == PAIRS
