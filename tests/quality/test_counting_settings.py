"""The counting rule's settings: the API with its bounds, the settings form, the export options."""

from __future__ import annotations

from django.test import Client

from tests.conftest import api_for


def _url(team, rest=""):
    return f"/api/projects/{team.project.pk}/{rest}"


def test_the_rule_is_patched_with_bounds_naming_the_field(team):
    lead = api_for(team.lead)
    r = lead.patch(
        _url(team),
        {
            "count_skip_paused": True,
            "count_min_gold_accuracy": 0.75,
            "count_skip_fast": True,
            "count_weight": "gold_accuracy",
        },
        format="json",
    )
    assert r.status_code == 200, r.json()
    body = r.json()
    assert (body["count_skip_paused"], body["count_min_gold_accuracy"]) == (True, 0.75)
    assert (body["count_skip_fast"], body["count_weight"]) == (True, "gold_accuracy")
    for bad in ({"count_min_gold_accuracy": 1.5}, {"count_min_gold_accuracy": -0.1}):
        r = lead.patch(_url(team), bad, format="json")
        assert r.status_code == 400 and "count_min_gold_accuracy" in r.json(), r.json()
    r = lead.patch(_url(team), {"count_weight": "heavy"}, format="json")
    assert r.status_code == 400 and "count_weight" in r.json()
    team.project.refresh_from_db()
    assert (team.project.count_min_gold_accuracy, team.project.count_weight) == (
        0.75,
        "gold_accuracy",
    )
    assert api_for(team.alice).patch(_url(team), {"count_skip_fast": False}).status_code == 403


def test_the_settings_form_saves_the_rule_and_keeps_it_when_left_out(team):
    client = Client()
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/settings/"
    html = client.get(url).content.decode()
    for name in ("count_skip_paused", "count_min_gold_accuracy", "count_skip_fast", "count_weight"):
        assert f'name="{name}"' in html
    base = {"name": "Team project", "overlap": 1, "rationale": "off", "lease_seconds": 600}
    base["undo_seconds"] = 60
    r = client.post(
        url,
        {
            **base,
            "count_min_gold_accuracy": "0.7",
            "count_weight": "agreement",
            "count_skip_fast": "on",
        },
    )
    assert r.status_code == 302
    team.project.refresh_from_db()
    assert team.project.count_min_gold_accuracy == 0.7
    assert (team.project.count_weight, team.project.count_skip_fast) == ("agreement", True)
    client.post(url, base)
    team.project.refresh_from_db()
    assert (team.project.count_min_gold_accuracy, team.project.count_weight) == (0.7, "agreement")
    r = client.post(url, {**base, "count_min_gold_accuracy": "2"})
    assert r.status_code == 200 and "less than or equal to 1" in r.content.decode()


def test_bad_export_rule_options_answer_400_naming_the_option(team):
    lead = api_for(team.lead)
    for query, name in (
        ({"min_gold_accuracy": "2"}, "min_gold_accuracy"),
        ({"min_gold_accuracy": "high"}, "min_gold_accuracy"),
        ({"skip_paused": "perhaps"}, "skip_paused"),
        ({"weight": "heavy"}, "weight"),
    ):
        r = lead.get(_url(team, "export/"), {"format": "trl", **query})
        assert r.status_code == 400 and name in str(r.json()), (query, r.content)


def test_the_export_form_offers_the_rule_overrides(team):
    client = Client()
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/datasets/"
    html = client.get(url).content.decode()
    for name in ("skip_paused", "min_gold_accuracy", "skip_fast"):
        assert f'name="{name}"' in html
    r = client.post(f"{url}export/", {"format": "trl", "bundle": "file", "min_gold_accuracy": "3"})
    assert r.status_code == 400


def test_the_schema_documents_the_rule(team):
    schema = api_for(team.lead).get("/api/schema/", {"format": "json"}).json()
    export = schema["paths"]["/api/projects/{project_id}/export/"]["get"]
    names = {p["name"] for p in export["parameters"]}
    assert {"skip_paused", "min_gold_accuracy", "skip_fast", "weight"} <= names
    weight = next(p for p in export["parameters"] if p["name"] == "weight")
    assert "gold_accuracy" in weight["schema"]["enum"]
    props = schema["components"]["schemas"]["Project"]["properties"]
    assert {
        "count_skip_paused",
        "count_min_gold_accuracy",
        "count_skip_fast",
        "count_weight",
    } <= set(props)
