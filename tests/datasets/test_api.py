from __future__ import annotations

import io
import json
import zipfile

import pyarrow.parquet as pq
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings

from annotate.models import DatasetJob, Prompt

from ..conftest import api_for
from .conftest import jsonl_rows, vote

ROWS = [
    {"prompt": "Hi 🙂", "chosen": "a\nb", "rejected": ""},
    {"prompt": "Again", "chosen": "c", "rejected": "d"},
]


def upload(name: str, rows: list[dict]) -> SimpleUploadedFile:
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    return SimpleUploadedFile(name, body)


def post_import(client, project, fmt, file, **extra):
    return client.post(
        f"/api/projects/{project.pk}/import/",
        {"format": fmt, "file": file, **extra},
        format="multipart",
    )


def test_it_imports_a_file_and_reports_counts(team):
    r = post_import(
        api_for(team.lead), team.project, "trl", upload("p.jsonl", ROWS), kind="gold", round=2
    )
    assert r.status_code == 201, r.json()
    assert r.json() == {
        "rows": 2,
        "prompts_added": 2,
        "prompts_skipped": 0,
        "comparisons_added": 2,
        "judgments_added": 2,
        "imported": 2,
        "skipped": [],
    }
    assert set(team.project.comparisons.values_list("kind", "round")) == {("gold", 2)}


def test_it_answers_400_naming_line_and_field(team):
    r = post_import(
        api_for(team.lead), team.project, "trl", upload("p.jsonl", [ROWS[0], {"prompt": "x"}])
    )
    assert r.status_code == 400
    assert r.json() == {"detail": 'line 2: "chosen" is missing'}
    assert Prompt.objects.count() == 0


def test_it_answers_413_over_the_upload_limit(team):
    with override_settings(PREFLOOP_MAX_UPLOAD_BYTES=10):
        r = post_import(api_for(team.lead), team.project, "trl", upload("p.jsonl", ROWS))
    assert r.status_code == 413 and "upload limit" in r.json()["detail"]
    assert Prompt.objects.count() == 0


def test_it_refuses_annotators_and_outsiders(team):
    r = post_import(api_for(team.alice), team.project, "trl", upload("p.jsonl", ROWS))
    assert r.status_code == 403
    assert (
        api_for(team.alice).get(f"/api/projects/{team.project.pk}/export/?format=trl").status_code
        == 403
    )
    assert (
        api_for(team.outsider)
        .get(f"/api/projects/{team.project.pk}/export/?format=trl")
        .status_code
        == 404
    )


def test_it_streams_every_export_format(team):
    post_import(api_for(team.lead), team.project, "trl", upload("p.jsonl", ROWS))
    client = api_for(team.lead)
    base = f"/api/projects/{team.project.pk}/export/"
    r = client.get(base, {"format": "trl"})
    assert r.status_code == 200 and r.streaming
    assert r["Content-Disposition"].endswith('-trl.jsonl"')
    rows = jsonl_rows(b"".join(r.streaming_content))
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "a\nb"}]
    plain = jsonl_rows(b"".join(client.get(base, {"format": "trl-plain"}).streaming_content))
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in plain] == [
        (r["prompt"], r["chosen"], r["rejected"]) for r in ROWS
    ]
    r = client.get(base, {"format": "parquet"})
    table = pq.read_table(io.BytesIO(b"".join(r.streaming_content)))
    assert table.num_rows == 2
    r = client.get(base, {"format": "csv"})
    assert b"".join(r.streaming_content).startswith(b"prompt,messages,chosen,rejected")
    judgments = jsonl_rows(b"".join(client.get(base, {"format": "judgments"}).streaming_content))
    assert {j["source"] for j in judgments} == {"imported"}
    r = client.get(base, {"format": "trl", "bundle": "hf"})
    with zipfile.ZipFile(io.BytesIO(b"".join(r.streaming_content))) as archive:
        assert any(n.endswith("state.json") for n in archive.namelist())
    card = b"".join(client.get(base, {"format": "card"}).streaming_content).decode()
    assert team.project.name in card


def test_a_download_says_what_it_is_on_every_machine(team):
    # named by the app, not guessed from the platform's MIME table (which may lack .parquet)
    post_import(api_for(team.lead), team.project, "trl", upload("p.jsonl", ROWS))
    base = f"/api/projects/{team.project.pk}/export/"
    client = api_for(team.lead)
    assert client.get(base, {"format": "parquet"})["Content-Type"] == (
        "application/vnd.apache.parquet"
    )
    assert client.get(base, {"format": "trl", "bundle": "zip"})["Content-Type"] == (
        "application/zip"
    )


def test_it_validates_export_options(team):
    base = f"/api/projects/{team.project.pk}/export/"
    r = api_for(team.lead).get(base, {"format": "xml"})
    assert r.status_code == 400 and r.json()["detail"].startswith('"format" must be one of')
    r = api_for(team.lead).get(base, {"format": "trl", "aggregation": "mean"})
    assert r.status_code == 400 and "aggregation" in r.json()["detail"]


def test_it_runs_a_background_export_and_serves_the_file(team, django_capture_on_commit_callbacks):
    comparison = team.pairs(1)[0]
    vote(comparison, "b", team.alice)
    client = api_for(team.lead)
    with (
        override_settings(CELERY_TASK_ALWAYS_EAGER=True),
        django_capture_on_commit_callbacks(execute=True),
    ):
        r = client.get(
            f"/api/projects/{team.project.pk}/export/", {"format": "trl", "background": "1"}
        )
    assert r.status_code == 202
    job = DatasetJob.objects.get()
    status = client.get(r.json()["url"]).json()
    assert status["status"] == "done" and status["percent"] == 100 and status["report"]["rows"] == 1
    download = client.get(status["download_url"])
    rows = jsonl_rows(b"".join(download.streaming_content))
    assert rows[0]["chosen"][0]["content"] == comparison.completion_b.text
    assert job.result_path.startswith("exports/")


def test_it_runs_a_large_import_as_a_job(team, django_capture_on_commit_callbacks):
    client = api_for(team.lead)
    with (
        override_settings(CELERY_TASK_ALWAYS_EAGER=True, PREFLOOP_IMPORT_INLINE_BYTES=10),
        django_capture_on_commit_callbacks(execute=True),
    ):
        r = post_import(client, team.project, "trl", upload("p.jsonl", ROWS))
    assert r.status_code == 202
    status = client.get(r.json()["url"]).json()
    assert status["status"] == "done"
    assert status["report"]["comparisons_added"] == 2 and status["download_url"] is None


def test_it_imports_parquet_and_csv_uploads(team, tmp):
    import pyarrow as pa

    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), sink)
    parquet = SimpleUploadedFile("prefs.parquet", sink.getvalue())
    r = post_import(api_for(team.lead), team.project, "trl", parquet)
    assert r.status_code == 201 and r.json()["comparisons_added"] == 2
    prompts = SimpleUploadedFile("p.csv", b'id,text\n1,"multi\nline"\n')
    r = post_import(api_for(team.lead), team.project, "prompts", prompts, column="text")
    assert r.status_code == 201 and r.json()["prompts_added"] == 1
    assert Prompt.objects.filter(messages=[{"role": "user", "content": "multi\nline"}]).exists()
