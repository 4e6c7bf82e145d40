"""A resent client_id must say the same thing; a project keeps a lead; annotators see the
loop's rounds and versions without server paths or error details."""

from __future__ import annotations

import uuid

import pytest

from annotate.models import Judgment, Membership
from training.models import ModelVersion, Round, TrainingRun

from ..conftest import api_for


def _judge(team, comparison, **body):
    return api_for(team.alice).post(
        f"/api/comparisons/{comparison.pk}/judgments/", body, format="json"
    )


@pytest.fixture
def judged(team):
    team.project.show_strength = True
    team.project.rationale = "optional"
    team.project.save()
    (comparison,) = team.pairs(1)
    assert api_for(team.alice).get(f"/api/projects/{team.project.pk}/next/").status_code == 200
    client_id = str(uuid.uuid4())
    first = {"choice": "left", "client_id": client_id, "strength": 2, "rationale": "clear"}
    assert _judge(team, comparison, **first).status_code == 201
    return team, comparison, first


def test_a_replay_that_says_the_same_answers_200(judged):
    team, comparison, first = judged
    r = _judge(team, comparison, **{**first, "rationale": "clear  "})
    assert r.status_code == 200
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    "change", [{"choice": "right"}, {"choice": "tie"}, {"strength": 3}, {"rationale": "other"}]
)
def test_a_replay_that_says_something_else_answers_409(judged, change):
    team, comparison, first = judged
    r = _judge(team, comparison, **{**first, **change})
    assert r.status_code == 409, r.content
    assert "client_id" in r.json()["detail"]
    judgment = Judgment.objects.get()
    assert (judgment.strength, judgment.rationale) == (2, "clear")


def test_the_last_lead_cannot_be_demoted(team):
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/members/",
        {"username": "lead", "role": "annotator"},
        format="json",
    )
    assert r.status_code == 409
    assert "at least one lead" in r.json()["detail"]
    assert team.project.role_of(team.lead) == Membership.Role.LEAD


def test_a_lead_can_step_down_once_there_is_another(team):
    api = api_for(team.lead)
    url = f"/api/projects/{team.project.pk}/members/"
    assert api.post(url, {"username": "bob", "role": "lead"}, format="json").status_code == 201
    r = api.post(url, {"username": "lead", "role": "annotator"}, format="json")
    assert r.status_code == 201
    assert team.project.role_of(team.lead) == Membership.Role.ANNOTATOR


def test_the_last_lead_cannot_be_demoted_on_the_page(team, client):
    client.force_login(team.lead)
    r = client.post(
        f"/projects/{team.project.pk}/members/",
        {"username": "lead", "role": "annotator"},
        follow=True,
    )
    assert "at least one lead" in r.content.decode()
    assert team.project.role_of(team.lead) == Membership.Role.LEAD


@pytest.fixture
def failed_round(team, tmp_path):
    path = str(tmp_path / "models" / "secret-base")
    v0 = ModelVersion.objects.create(
        project=team.project, number=0, spec=path, state=ModelVersion.State.SERVING
    )
    loop_round = Round.objects.create(
        project=team.project,
        number=1,
        policy=v0,
        state=Round.State.FAILED,
        error=f'Traceback (most recent call last):\n  File "{path}/x.py"',
    )
    TrainingRun.objects.create(
        round=loop_round, attempt=1, version_number=1, state="failed", error=f"OSError: {path}"
    )
    return path


def test_annotators_see_rounds_and_versions_without_paths_or_tracebacks(team, failed_round):
    versions = api_for(team.alice).get(f"/api/projects/{team.project.pk}/versions/")
    rounds = api_for(team.alice).get(f"/api/projects/{team.project.pk}/rounds/")
    assert versions.status_code == rounds.status_code == 200
    body = versions.content.decode() + rounds.content.decode()
    assert failed_round not in body and "Traceback" not in body and "tmp" not in body
    assert versions.json()[0]["spec"] is None
    assert rounds.json()[0]["error"] == "Failed; a lead can see why."
    assert rounds.json()[0]["training"]["error"] == "Failed; a lead can see why."


def test_leads_still_see_them(team, failed_round):
    versions = api_for(team.lead).get(f"/api/projects/{team.project.pk}/versions/")
    rounds = api_for(team.lead).get(f"/api/projects/{team.project.pk}/rounds/")
    assert versions.json()[0]["spec"] == failed_round
    assert "Traceback" in rounds.json()[0]["error"]
    assert failed_round in rounds.json()[0]["training"]["error"]


def test_annotators_see_hub_ids(team):
    ModelVersion.objects.create(
        project=team.project, number=0, spec="org/model", state=ModelVersion.State.SERVING
    )
    r = api_for(team.alice).get(f"/api/projects/{team.project.pk}/versions/")
    assert r.json()[0]["spec"] == "org/model"
