from __future__ import annotations

import json

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from annotate.models import DatasetJob, Prompt

from .conftest import jsonl_rows, vote


def file(rows, name="p.jsonl"):
    return SimpleUploadedFile(name, "".join(json.dumps(r) + "\n" for r in rows).encode())


def test_it_shows_the_datasets_page_to_leads_only(client, team):
    url = f"/projects/{team.project.pk}/datasets/"
    client.force_login(team.lead)
    r = client.get(url)
    assert r.status_code == 200 and b'id="import"' in r.content and b'id="export"' in r.content
    client.force_login(team.alice)
    assert client.get(url).status_code == 403
    client.force_login(team.outsider)
    assert client.get(url).status_code == 404


def test_it_links_the_datasets_page_from_the_project(client, team):
    client.force_login(team.lead)
    r = client.get(f"/projects/{team.project.pk}/")
    assert f'href="/projects/{team.project.pk}/datasets/"'.encode() in r.content


def test_it_imports_and_flashes_the_report(client, team):
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/datasets/import/"
    r = client.post(
        url, {"format": "prompts", "file": file([{"prompt": "a"}, {"prompt": "a"}])}, follow=True
    )
    assert (
        "Imported: 2 rows read, 1 prompts added, 1 duplicate prompts skipped." in r.content.decode()
    )


def test_it_flashes_a_bad_line_and_writes_nothing(client, team):
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/datasets/import/"
    r = client.post(
        url, {"format": "prompts", "file": file([{"prompt": "a"}, {"text": "b"}])}, follow=True
    )
    assert "Nothing was imported: line 2: &quot;prompt&quot; is missing" in r.content.decode()
    assert Prompt.objects.count() == 0
    with override_settings(PREFLOOP_MAX_UPLOAD_BYTES=5):
        r = client.post(url, {"format": "prompts", "file": file([{"prompt": "a"}])}, follow=True)
    assert "over the upload limit" in r.content.decode()


def test_it_downloads_an_export(client, team):
    vote(team.pairs(1)[0], "a", team.alice)
    client.force_login(team.lead)
    r = client.post(
        f"/projects/{team.project.pk}/datasets/export/",
        {
            "format": "trl",
            "bundle": "file",
            "aggregation": "majority",
            "weight": "uniform",
            "action": "download",
        },
    )
    assert r.status_code == 200 and len(jsonl_rows(b"".join(r.streaming_content))) == 1
    r = client.get(
        f"/projects/{team.project.pk}/datasets/export/",
        {"format": "judgments", "bundle": "file", "aggregation": "majority", "weight": "uniform"},
    )
    assert jsonl_rows(b"".join(r.streaming_content))[0]["choice"] == "a"


def test_it_prepares_an_export_in_the_background_and_polls_it(
    client, team, django_capture_on_commit_callbacks
):
    vote(team.pairs(1)[0], "a", team.alice)
    client.force_login(team.lead)
    data = {
        "format": "parquet",
        "bundle": "zip",
        "aggregation": "majority",
        "weight": "uniform",
        "action": "background",
    }
    r = client.post(f"/projects/{team.project.pk}/datasets/export/", data)
    job = DatasetJob.objects.get()
    assert (
        r.status_code == 302
        and r["Location"] == f"/projects/{team.project.pk}/datasets/jobs/{job.pk}/"
    )
    page = client.get(r["Location"]).content.decode()
    assert 'hx-trigger="every 2s"' in page and "Waiting for a worker" in page
    with override_settings(CELERY_TASK_ALWAYS_EAGER=True):
        from annotate.datasets.tasks import run_dataset_job

        assert run_dataset_job.delay(job.pk).get() == "done"
    partial = client.get(r["Location"], headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in partial and "every 2s" not in partial and "Download" in partial
    download = client.get(f"/projects/{team.project.pk}/datasets/jobs/{job.pk}/download/")
    assert download.status_code == 200 and download["Content-Disposition"].endswith('.zip"')
