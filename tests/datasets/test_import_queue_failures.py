"""A background import or export that cannot be queued (the broker is down) answers 503 and
leaves nothing behind: no pending job that no worker will run, no upload under var/imports."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from kombu.exceptions import OperationalError
from rest_framework.authtoken.models import Token

from annotate.datasets import jobs, tasks
from annotate.datasets.formats import ImportOptions
from annotate.errors import Unavailable
from annotate.models import DatasetJob, Prompt

from ..conftest import api_for
from .conftest import vote
from .server import Gunicorn, free_port

ROWS = b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
EXPORT_FORM = {
    "format": "trl",
    "bundle": "file",
    "aggregation": "majority",
    "weight": "uniform",
    "action": "background",
}
BROKER_ERRORS = [
    OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    # the embedded file-system broker with its queue directory gone
    FileNotFoundError(2, "No such file or directory"),
]


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture(params=BROKER_ERRORS, ids=["kombu", "filesystem"])
def broker_down(request, monkeypatch):
    def delay(*args, **kwargs):
        raise request.param

    monkeypatch.setattr(tasks, "run_dataset_job", SimpleNamespace(delay=delay))


def _uploads(var_dir):
    return sorted((var_dir / "imports").glob("*"))


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_503_for_an_import_and_keeps_nothing(team, var_dir, broker_down):
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"format": "trl", "file": SimpleUploadedFile("p.jsonl", ROWS), "background": "true"},
        format="multipart",
    )
    assert r.status_code == 503
    assert r.json()["detail"] == (
        "The import could not be queued: the task broker is not reachable. "
        "Nothing was kept; try again in a moment."
    )
    assert not DatasetJob.objects.exists() and not Prompt.objects.exists()
    assert _uploads(var_dir) == []


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_503_for_a_background_export(team, var_dir, broker_down):
    vote(team.pairs(1)[0], "a", team.alice)
    r = api_for(team.lead).get(
        f"/api/projects/{team.project.pk}/export/", {"format": "trl", "background": "1"}
    )
    assert r.status_code == 503 and r.json()["detail"].startswith("The export could not be")
    assert not DatasetJob.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_import_page_shows_the_error_and_keeps_nothing(
    client, team, var_dir, broker_down, settings
):
    settings.PREFLOOP_IMPORT_INLINE_BYTES = 10  # the upload runs as a job
    client.force_login(team.lead)
    r = client.post(
        f"/projects/{team.project.pk}/datasets/import/",
        {"format": "trl", "file": SimpleUploadedFile("p.jsonl", ROWS)},
        follow=True,
    )
    page = r.content.decode()
    assert r.status_code == 200 and r.redirect_chain[-1][1] == 302
    assert "Nothing was imported: The import could not be queued" in page
    assert not DatasetJob.objects.exists() and _uploads(var_dir) == []


@pytest.mark.django_db(transaction=True)
def test_the_export_page_answers_503_with_the_error(client, team, var_dir, broker_down):
    vote(team.pairs(1)[0], "a", team.alice)
    client.force_login(team.lead)
    r = client.post(f"/projects/{team.project.pk}/datasets/export/", EXPORT_FORM)
    assert r.status_code == 503
    assert "The export could not be queued" in r.content.decode()
    assert not DatasetJob.objects.exists()


def test_a_job_queued_at_an_outer_commit_is_removed_as_well(
    team, var_dir, broker_down, django_capture_on_commit_callbacks
):
    # inside a caller's transaction the message goes out when that transaction commits
    with (
        pytest.raises(Unavailable),
        django_capture_on_commit_callbacks(execute=True),
    ):
        upload = SimpleUploadedFile("p.jsonl", ROWS)
        jobs.start_import_job(team.project, team.lead, "trl", upload, "p.jsonl", ImportOptions())
        assert len(_uploads(var_dir)) == 1
    assert not DatasetJob.objects.exists() and _uploads(var_dir) == []


def test_an_upload_is_removed_when_its_job_cannot_be_saved(team, var_dir, monkeypatch):
    def create(**fields):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DatasetJob.objects, "create", create)
    with pytest.raises(OSError):
        jobs.start_import_job(
            team.project, team.lead, "trl", SimpleUploadedFile("p.jsonl", ROWS), "p.jsonl",
            ImportOptions(),
        )  # fmt: skip
    assert _uploads(var_dir) == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_server_with_its_broker_down_answers_503(team, tmp_path):
    # nothing listens on this port: kombu's connection is refused, as when Redis is stopped
    broker = f"redis://127.0.0.1:{free_port()}/0"
    server = Gunicorn(tmp_path / "var", CELERY_BROKER_URL=broker)
    try:
        token = Token.objects.create(user=team.lead).key
        boundary = "prefloop-test-boundary"
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="format"\r\n\r\ntrl\r\n'
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="background"\r\n\r\ntrue\r\n'
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="p.jsonl"\r\n'
                "Content-Type: application/x-ndjson\r\n\r\n"
            ).encode()
            + ROWS
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, answer = server.http11(
            "POST",
            f"/api/projects/{team.project.pk}/import/",
            {
                "Authorization": f"Token {token}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            body,
        )
    finally:
        server.stop()
    assert status == 503, answer
    assert "could not be queued" in json.loads(answer)["detail"]
    assert not DatasetJob.objects.exists()
    assert sorted((tmp_path / "var" / "imports").glob("*")) == []
    assert "Could not queue dataset job" in server.output()


def test_a_message_for_a_removed_job_is_dropped(db):
    # the broker may have taken the message although sending it raised
    assert tasks.run_dataset_job.apply(args=[987654]).get() == "gone"
