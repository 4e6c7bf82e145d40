from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from annotate.models import Assignment, Comparison, Judgment, Project, Prompt

from ..conftest import api_for


def test_it_issues_a_token_and_accepts_it(team):
    client = APIClient()
    r = client.post("/api/auth/token/", {"username": "alice", "password": "pw"}, format="json")
    assert r.status_code == 200
    token = r.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    r = client.get("/api/projects/")
    assert r.status_code == 200
    assert [p["name"] for p in r.json()] == ["Team project"]


def test_it_refuses_a_bad_password(team):
    r = APIClient().post(
        "/api/auth/token/", {"username": "alice", "password": "nope"}, format="json"
    )
    assert r.status_code == 400
    assert "non_field_errors" in r.json()


def test_it_requires_authentication(team):
    r = APIClient().get("/api/projects/")
    assert r.status_code in (401, 403)
    assert r["Content-Type"] == "application/json"


def test_it_lists_only_my_projects(team):
    r = api_for(team.outsider).get("/api/projects/")
    assert [p["name"] for p in r.json()] == ["Other project"]
    assert r.json()[0]["role"] == "lead"


def test_it_creates_a_project_with_me_as_lead(team):
    r = api_for(team.lead).post(
        "/api/projects/", {"name": "New one", "overlap": 3, "rationale": "optional"}, format="json"
    )
    assert r.status_code == 201, r.json()
    body = r.json()
    assert body["role"] == "lead" and body["overlap"] == 3 and body["slug"] == "new-one"


def test_it_validates_project_fields(team):
    r = api_for(team.lead).post("/api/projects/", {"name": "X", "overlap": 0}, format="json")
    assert r.status_code == 400
    assert "overlap" in r.json()


def test_annotators_cannot_create_projects(team):
    r = api_for(team.alice).post("/api/projects/", {"name": "Mine"}, format="json")
    assert r.status_code == 403
    assert not Project.objects.filter(name="Mine").exists()


def test_it_patches_a_project_as_lead_only(team):
    url = f"/api/projects/{team.project.pk}/"
    assert api_for(team.alice).patch(url, {"overlap": 2}, format="json").status_code == 403
    assert api_for(team.outsider).patch(url, {"overlap": 2}, format="json").status_code == 404
    r = api_for(team.lead).patch(url, {"overlap": 2, "undo_seconds": 30}, format="json")
    assert r.status_code == 200
    team.project.refresh_from_db()
    assert (team.project.overlap, team.project.undo_seconds) == (2, 30)


def test_outsiders_cannot_see_a_project(team):
    r = api_for(team.outsider).get(f"/api/projects/{team.project.pk}/")
    assert r.status_code == 404
    assert r.json() == {"detail": "No such project."}


def test_it_adds_members(team):
    url = f"/api/projects/{team.project.pk}/members/"
    r = api_for(team.lead).post(url, {"username": "mallory", "role": "annotator"}, format="json")
    assert r.status_code == 201
    assert team.project.role_of(team.outsider) == "annotator"
    r = api_for(team.lead).post(url, {"username": "nobody", "role": "annotator"}, format="json")
    assert r.status_code == 400 and "nobody" in r.json()["detail"]
    r = api_for(team.lead).post(url, {"username": "mallory", "role": "king"}, format="json")
    assert r.status_code == 400 and "role" in r.json()
    assert (
        api_for(team.alice)
        .post(url, {"username": "bob", "role": "lead"}, format="json")
        .status_code
        == 403
    )


def test_it_imports_prompts_and_skips_duplicates(team):
    url = f"/api/projects/{team.project.pk}/prompts/"
    body = [
        {"prompt": "Hello?"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "metadata": {"source": "test"},
        },
        {"prompt": "Hello?"},
    ]
    r = api_for(team.lead).post(url, body, format="json")
    assert r.status_code == 201
    assert r.json() == {"rows": 3, "prompts_added": 2, "prompts_skipped": 1, "comparisons_added": 0}
    prompt = Prompt.objects.get(metadata__source="test")
    assert prompt.messages[0] == {"role": "system", "content": "Be brief."}


def test_it_rejects_a_bad_prompt_list_whole(team):
    url = f"/api/projects/{team.project.pk}/prompts/"
    r = api_for(team.lead).post(url, [{"prompt": "ok"}, {"text": "no"}], format="json")
    assert r.status_code == 400
    assert r.json()["detail"] == 'item 2: "prompt" is missing (or give "messages")'
    assert Prompt.objects.count() == 0
    r = api_for(team.lead).post(url, {"prompt": "x"}, format="json")
    assert r.status_code == 400


def test_annotators_cannot_import(team):
    url = f"/api/projects/{team.project.pk}/prompts/"
    assert api_for(team.alice).post(url, [{"prompt": "x"}], format="json").status_code == 403


def test_it_imports_comparisons(team):
    url = f"/api/projects/{team.project.pk}/comparisons/"
    body = [{"prompt": "2+2?", "completion_a": "4", "completion_b": "5"}]
    r = api_for(team.lead).post(url, body, format="json")
    assert r.status_code == 201 and r.json()["comparisons_added"] == 1
    c = Comparison.objects.get()
    assert (c.completion_a.text, c.completion_b.text) == ("4", "5")
    r = api_for(team.lead).post(url, [{"prompt": "x", "completion_a": "a"}], format="json")
    assert r.status_code == 400 and r.json()["detail"] == 'item 1: "completion_b" is missing'


def test_it_serves_the_next_pair_and_204_when_done(team):
    (pair,) = team.pairs(1)
    client = api_for(team.alice)
    r = client.get(f"/api/projects/{team.project.pk}/next/")
    assert r.status_code == 200
    body = r.json()
    assert body["comparison"] == pair.pk
    assert {body["left"]["text"], body["right"]["text"]} == {
        pair.completion_a.text,
        pair.completion_b.text,
    }
    assert body["messages"] == pair.prompt.messages
    assert "model" not in str(body).lower()
    r = client.post(
        f"/api/comparisons/{pair.pk}/judgments/",
        {"choice": "tie", "client_id": str(uuid.uuid4())},
        format="json",
    )
    assert r.status_code == 201
    assert client.get(f"/api/projects/{team.project.pk}/next/").status_code == 204


def test_it_judges_idempotently(team):
    (pair,) = team.pairs(1)
    client = api_for(team.alice)
    task = client.get(f"/api/projects/{team.project.pk}/next/").json()
    body = {"choice": "left", "client_id": str(uuid.uuid4()), "duration_ms": 1234}
    url = f"/api/comparisons/{task['comparison']}/judgments/"
    first = client.post(url, body, format="json")
    replay = client.post(url, body, format="json")
    assert first.status_code == 201 and replay.status_code == 200
    assert first.json() == replay.json()
    assert first.json()["choice"] == "left"
    j = Judgment.objects.get()
    shown_left = pair.completion_a if j.left_is_a else pair.completion_b
    assert (j.choice == "a") == (shown_left == pair.completion_a)
    assert j.duration_ms == 1234


@pytest.mark.parametrize(("body", "field"), [
    ({"choice": "middle", "client_id": "00000000-0000-0000-0000-000000000001"}, "choice"),
    ({"choice": "left"}, "client_id"),
    ({"choice": "left", "client_id": "not-a-uuid"}, "client_id"),
    ({"choice": "left", "client_id": "00000000-0000-0000-0000-000000000001", "strength": 9}, "strength"),
])  # fmt: skip
def test_it_validates_judgment_fields(team, body, field):
    team.pairs(1)
    client = api_for(team.alice)
    task = client.get(f"/api/projects/{team.project.pk}/next/").json()
    r = client.post(f"/api/comparisons/{task['comparison']}/judgments/", body, format="json")
    assert r.status_code == 400
    assert field in r.json()
    assert Judgment.objects.count() == 0


def test_it_refuses_judgments_without_a_valid_lease(team):
    a, b = team.pairs(2)
    client = api_for(team.alice)
    body = {"choice": "left", "client_id": str(uuid.uuid4())}
    task = client.get(f"/api/projects/{team.project.pk}/next/").json()
    other = b if task["comparison"] == a.pk else a
    r = client.post(f"/api/comparisons/{other.pk}/judgments/", body, format="json")
    assert r.status_code == 403 and "not leased" in r.json()["detail"]
    Assignment.objects.update(lease_expires=timezone.now() - timedelta(seconds=5))
    r = client.post(f"/api/comparisons/{task['comparison']}/judgments/", body, format="json")
    assert r.status_code == 410 and "expired" in r.json()["detail"]
    r = api_for(team.outsider).post(f"/api/comparisons/{a.pk}/judgments/", body, format="json")
    assert r.status_code == 404
    r = client.post("/api/comparisons/999999/judgments/", body, format="json")
    assert r.status_code == 404
    assert Judgment.objects.count() == 0


def test_it_undoes_with_delete(team):
    team.pairs(2)
    client = api_for(team.alice)
    task = client.get(f"/api/projects/{team.project.pk}/next/").json()
    url = f"/api/comparisons/{task['comparison']}/judgments/"
    client.post(url, {"choice": "right", "client_id": str(uuid.uuid4())}, format="json")
    assert api_for(team.bob).delete(url).status_code == 404
    assert client.delete(url).status_code == 204
    assert Judgment.objects.count() == 0
    again = client.get(f"/api/projects/{team.project.pk}/next/").json()
    assert again["comparison"] == task["comparison"]
    assert client.delete(url).status_code == 404


def test_it_refuses_undo_after_the_window(team):
    team.pairs(1)
    client = api_for(team.alice)
    task = client.get(f"/api/projects/{team.project.pk}/next/").json()
    r = client.post(
        f"/api/comparisons/{task['comparison']}/judgments/",
        {"choice": "left", "client_id": str(uuid.uuid4())},
        format="json",
    )
    Judgment.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    r = client.delete(f"/api/judgments/{r.json()['id']}/")
    assert r.status_code == 409
    assert Judgment.objects.count() == 1


def test_unknown_api_paths_answer_json(team):
    r = api_for(team.alice).get("/api/nothing-here/")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not found."}


def test_it_serves_the_schema_and_offline_docs(team):
    client = api_for(team.alice)
    r = client.get("/api/schema/")
    assert r.status_code == 200
    assert b"/api/projects/{project_id}/next/" in r.content
    r = client.get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "swagger-ui" in html
    # every script and stylesheet comes from this server: no other origin, no CDN
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", html)
    assert any(s.endswith(".js") for s in sources)
    assert [s for s in sources if re.match(r"(?:[a-z]+:)?//", s, re.IGNORECASE)] == []
