"""Input that used to answer HTTP 500: each now gets a 4xx that names the field or line."""

from __future__ import annotations

import io
import json

import pytest
from rest_framework.test import APIClient

from annotate.models import Project
from training.models import ProjectLoop

from ..conftest import api_for

LONG_NAME = "/tmp/" + "x" * 300


def test_it_refuses_a_base_model_with_an_overlong_path_component_on_the_api(team):
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {"base_model": LONG_NAME}, format="json"
    )
    assert r.status_code == 400, r.content
    assert "base_model" in r.json()


def test_it_refuses_a_base_model_with_an_overlong_path_component_on_the_loop_page(team, client):
    client.force_login(team.lead)
    r = client.post(
        f"/projects/{team.project.pk}/loop/settings/",
        {"base_model": LONG_NAME},
    )
    # the settings form answers 400 with the error next to the base model field
    assert r.status_code == 400
    assert 'id="base_model-error"' in r.content.decode()
    assert ProjectLoop.of(team.project).base_model != LONG_NAME


@pytest.mark.parametrize("field", ["lease_seconds", "undo_seconds"])
def test_it_bounds_lease_and_undo_seconds(team, field):
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {field: 10**12}, format="json"
    )
    assert r.status_code == 400, r.content
    assert field in r.json()
    r = api_for(team.alice).get(f"/api/projects/{team.project.pk}/next/")
    assert r.status_code in (200, 204)


@pytest.mark.parametrize("lead_time", ["Infinity", "NaN", "1e400"])
def test_it_refuses_a_label_studio_lead_time_that_is_not_finite(team, lead_time):
    task = (
        '[{"id": 1, "data": {"prompt": "p", "answer1": "a", "answer2": "b"}, "annotations": '
        '[{"completed_by": 1, "lead_time": ' + lead_time + ', "result": [{"type": '
        '"pairwise", "value": {"selected": "left"}}]}]}]'
    )
    upload = io.BytesIO(task.encode())
    upload.name = "ls.json"
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": upload, "format": "label-studio"},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert "item 1" in r.json()["detail"]
    assert not team.project.comparisons.exists()


def test_it_refuses_an_import_round_past_the_largest_round(team):
    upload = io.BytesIO(b'{"prompt": "p", "completion_a": "a", "completion_b": "b"}\n')
    upload.name = "pairs.jsonl"
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": upload, "format": "pairs", "round": str(2**63)},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert '"round"' in r.json()["detail"]


def test_it_refuses_export_rounds_past_the_largest_round(team):
    r = api_for(team.lead).get(
        f"/api/projects/{team.project.pk}/export/", {"format": "trl", "rounds": str(2**63)}
    )
    assert r.status_code == 400, r.content
    assert '"rounds"' in r.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/comparisons/{huge}/judgments/",
        "/api/judgments/{huge}/",
    ],
)
def test_it_answers_404_for_an_id_past_the_largest_id(team, path):
    r = api_for(team.alice).delete(path.format(huge=2**64))
    assert r.status_code == 404
    assert r.json() == {"detail": "Not found."}


@pytest.mark.parametrize("huge", [2**63, 2**64, 10**30])
def test_it_answers_404_for_a_project_id_past_the_largest_id(team, huge):
    assert api_for(team.lead).get(f"/api/projects/{huge}/").status_code == 404
    assert api_for(team.alice).get(f"/api/projects/{huge}/next/").status_code == 404


def test_it_refuses_json_nested_too_deep(team):
    body = "[" * 100_000 + "]" * 100_000
    r = api_for(team.lead).generic(
        "POST", f"/api/projects/{team.project.pk}/prompts/", body, "application/json"
    )
    assert r.status_code == 400, r.content
    assert "JSON" in r.json()["detail"]


def test_it_refuses_deep_json_in_loop_settings_on_the_loop_page(team, client):
    client.force_login(team.lead)
    r = client.post(
        f"/projects/{team.project.pk}/loop/settings/",
        {"base_model": "demo", "dpo": '{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"},
    )
    assert r.status_code == 400
    assert "not valid JSON: nested too deeply" in r.content.decode()


def test_it_refuses_deep_json_in_a_jsonl_line(team):
    line = '{"prompt": "p", "metadata": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}\n"
    upload = io.BytesIO(line.encode())
    upload.name = "prompts.jsonl"
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": upload, "format": "prompts"},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert "line 1" in r.json()["detail"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_it_refuses_nan_in_jsonl_metadata(team, constant):
    lines = '{"prompt": "ok"}\n{"prompt": "p", "metadata": {"score": ' + constant + "}}\n"
    upload = io.BytesIO(lines.encode())
    upload.name = "prompts.jsonl"
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": upload, "format": "prompts"},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert "line 2" in r.json()["detail"]
    assert not team.project.prompts.exists()


def test_it_refuses_nan_in_parquet_metadata(team, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "metadata": {"s": float("nan")}}]), path)
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": path.open("rb"), "format": "prompts"},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert "row 1" in r.json()["detail"]


def test_it_answers_413_for_an_api_body_over_the_limit(team, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps([{"prompt": "x" * 2000}])
    r = api_for(team.lead).generic(
        "POST", f"/api/projects/{team.project.pk}/prompts/", body, "application/json"
    )
    assert r.status_code == 413, r.content
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" not in r.json()["detail"]
    assert "too large" in r.json()["detail"]


def test_it_answers_413_for_an_anonymous_token_request_over_the_limit(db, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"username": "x" * 2000, "password": "pw"})
    r = APIClient().generic("POST", "/api/auth/token/", body, "application/json")
    assert r.status_code == 413, r.content
    assert r["Content-Type"] == "application/json"


def test_it_answers_413_for_a_large_form_post(db, settings, client):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    r = client.post("/accounts/login/", {"username": "x" * 2000, "password": "pw"})
    assert r.status_code == 413


def test_nothing_is_half_written_on_a_refused_project_update(team):
    before = Project.objects.get(pk=team.project.pk).lease_seconds
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/",
        {"name": "renamed", "lease_seconds": 10**12},
        format="json",
    )
    assert r.status_code == 400
    project = Project.objects.get(pk=team.project.pk)
    assert project.name == "Team project" and project.lease_seconds == before


@pytest.mark.parametrize(
    "item, where",
    [
        ({"prompt": "a\u0000b"}, '"prompt"'),
        ({"messages": [{"role": "user", "content": "\u0000"}]}, '"messages"[0].content'),
        ({"prompt": "p", "metadata": {"k\u0000": 1}}, 'a key of "metadata"'),
    ],
)
def test_it_refuses_a_nul_character_in_an_imported_item(team, item, where):
    # PostgreSQL stores a NUL in neither a text nor a JSON column: it answered 500 there
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/prompts/", [item, {"prompt": "fine"}], format="json"
    )
    assert r.status_code == 400, r.content
    assert r.json()["detail"].startswith(f"item 1: {where}")
    assert not team.project.prompts.exists()


@pytest.mark.parametrize(
    "settings_, where",
    [
        ({"system_prompt": "a\u0000b"}, "system_prompt"),
        ({"dpo": {"loss": "sigmoid\u0000"}}, "dpo.loss"),
    ],
)
def test_it_refuses_a_nul_character_in_loop_settings(team, settings_, where):
    # PostgreSQL stores no NUL in a JSON column: it answered 500 there
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {"loop_settings": settings_}, format="json"
    )
    assert r.status_code == 400, r.content
    assert r.json()["loop_settings"] == [f"{where}: must not hold a NUL character"]
