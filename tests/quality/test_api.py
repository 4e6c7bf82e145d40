"""The quality API: the report, gold, pause and resume; leads only."""

from __future__ import annotations

import pytest

from annotate.models import Comparison, Membership
from tests.conftest import api_for
from tests.factories import ComparisonFactory, ProjectFactory

from .helpers import judge, judge_next


def _url(team, rest=""):
    return f"/api/projects/{team.project.pk}/{rest}"


@pytest.fixture
def judged(team):
    pairs = team.pairs(10)
    for i, c in enumerate(pairs):
        judge(team.alice, c, "a", left_is_a=i % 3 == 0)
        judge(team.bob, c, "a" if i < 7 else "tie")
    return team


def test_a_lead_reads_the_quality_report(judged):
    team = judged
    r = api_for(team.lead).get(_url(team, "quality/"))
    assert r.status_code == 200
    body = r.json()
    agreement = body["agreement"]
    for key in ("items", "percent", "fleiss_kappa", "krippendorff_alpha", "cohen_kappa"):
        assert key in agreement
    assert agreement["items"] == 10
    assert agreement["percent"] == pytest.approx(0.7)
    assert agreement["fleiss_kappa_ci95"] is not None
    (cohen,) = agreement["cohen_kappa"]
    assert cohen["annotators"] == ["alice", "bob"] and cohen["items"] == 10
    rows = {row["annotator"]: row for row in body["annotators"]}
    alice = rows["alice"]
    for key in (
        "judgments",
        "left_rate",
        "left_p_value",
        "longer_win_rate",
        "median_seconds",
        "gold_accuracy",
        "flip_rate",
        "paused",
    ):
        assert key in alice
    assert alice["judgments"] == 10
    # shown A on the left on pairs 0, 3, 6, 9: 4 left of 10
    assert alice["left_rate"] == pytest.approx(0.4)
    assert alice["median_seconds"] == pytest.approx(5.0)
    assert alice["gold_accuracy"] is None and alice["paused"] is False


def test_it_names_annotators_by_pseudonym_on_request(judged):
    team = judged
    r = api_for(team.lead).get(_url(team, "quality/"), {"names": "pseudonyms"})
    assert r.status_code == 200
    names = [row["annotator"] for row in r.json()["annotators"]]
    assert all(n.startswith("ann-") for n in names) and len(names) == 2
    r = api_for(team.lead).get(_url(team, "quality/"), {"names": "everyone"})
    assert r.status_code == 400 and "names" in r.json()["detail"]


def test_annotators_get_403_and_outsiders_404(team):
    assert api_for(team.alice).get(_url(team, "quality/")).status_code == 403
    assert api_for(team.outsider).get(_url(team, "quality/")).status_code == 404
    (c,) = team.pairs(1)
    gold = _url(team, f"comparisons/{c.pk}/gold/")
    assert api_for(team.alice).put(gold, {"answer": "a"}, format="json").status_code == 403
    assert api_for(team.outsider).put(gold, {"answer": "a"}, format="json").status_code == 404
    resume = _url(team, "members/alice/resume/")
    assert api_for(team.alice).post(resume).status_code == 403
    assert api_for(team.outsider).post(resume).status_code == 404
    c.refresh_from_db()
    assert c.gold_choice == ""


def test_a_lead_marks_and_unmarks_gold(team):
    (c,) = team.pairs(1)
    client = api_for(team.lead)
    url = _url(team, f"comparisons/{c.pk}/gold/")
    r = client.put(url, {"answer": "tie"}, format="json")
    assert r.status_code == 200
    assert r.json() == {"comparison": c.pk, "kind": "gold", "gold_choice": "tie"}
    r = client.put(url, {"answer": "left"}, format="json")
    assert r.status_code == 400 and "answer" in r.json()
    c.refresh_from_db()
    assert c.gold_choice == "tie"
    r = client.delete(url)
    assert r.status_code == 200 and r.json()["gold_choice"] == ""
    elsewhere = ComparisonFactory(project=ProjectFactory())
    r = client.put(_url(team, f"comparisons/{elsewhere.pk}/gold/"), {"answer": "a"}, format="json")
    assert r.status_code == 404
    assert Comparison.objects.get(pk=elsewhere.pk).gold_choice == ""


def test_failed_gold_pauses_and_the_lead_resumes_through_the_api(team):
    project = team.project
    project.gold_min_items = 2
    project.gold_min_accuracy = 0.5
    project.gold_rate = 1.0  # gold first, while ordinary pairs are left
    project.save()
    lead = api_for(team.lead)
    for c in team.pairs(2):
        assert (
            lead.put(
                _url(team, f"comparisons/{c.pk}/gold/"), {"answer": "a"}, format="json"
            ).status_code
            == 200
        )
    team.pairs(2)
    judge_next(team.alice, project, "b")
    judge_next(team.alice, project, "b")
    r = api_for(team.alice).get(_url(team, "next/"))
    assert r.status_code == 403
    assert "paused" in r.json()["detail"] and "0 of your last 2 gold pairs" in r.json()["detail"]
    rows = {row["annotator"]: row for row in lead.get(_url(team, "quality/")).json()["annotators"]}
    assert rows["alice"]["paused"] is True and rows["alice"]["gold_accuracy"] == 0.0
    r = lead.post(_url(team, "members/alice/resume/"))
    assert r.status_code == 200
    assert r.json() == {"username": "alice", "paused": False, "paused_reason": ""}
    assert api_for(team.alice).get(_url(team, "next/")).status_code == 200


def test_a_lead_pauses_by_hand(team):
    lead = api_for(team.lead)
    r = lead.post(_url(team, "members/bob/pause/"), {"reason": ""}, format="json")
    assert r.status_code == 400
    r = lead.post(_url(team, "members/nobody/pause/"), {"reason": "x"}, format="json")
    assert r.status_code == 404
    r = lead.post(_url(team, "members/bob/pause/"), {"reason": "Too fast."}, format="json")
    assert r.status_code == 200 and r.json()["paused"] is True
    assert Membership.objects.get(project=team.project, user=team.bob).paused
    assert api_for(team.bob).get(_url(team, "next/")).status_code == 403


def test_thresholds_are_patched_with_bounds(team):
    lead = api_for(team.lead)
    r = lead.patch(_url(team), {"gold_min_accuracy": 0.9, "gold_min_items": 4}, format="json")
    assert r.status_code == 200
    assert (r.json()["gold_min_accuracy"], r.json()["gold_min_items"]) == (0.9, 4)
    r = lead.patch(_url(team), {"fast_judgment_seconds": -1}, format="json")
    assert r.status_code == 400 and "fast_judgment_seconds" in str(r.json())


def test_the_schema_documents_the_quality_endpoints(team):
    schema = api_for(team.lead).get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    quality = paths["/api/projects/{project_id}/quality/"]["get"]
    ref = quality["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"agreement", "annotators"} <= set(component["properties"])
    assert any(p["name"] == "names" for p in quality["parameters"])
    assert "put" in paths["/api/projects/{project_id}/comparisons/{comparison_id}/gold/"]
    assert "post" in paths["/api/projects/{project_id}/members/{username}/pause/"]
    assert "post" in paths["/api/projects/{project_id}/members/{username}/resume/"]
    annotator = schema["components"]["schemas"]["AnnotatorQuality"]["properties"]
    assert {"left_rate", "left_p_value", "median_seconds", "flip_rate", "paused"} <= set(annotator)


def test_hidden_names_hide_usernames_too(judged):
    team = judged
    rows = api_for(team.lead).get(_url(team, "quality/"), {"names": "pseudonyms"}).json()
    assert all(r["username"] is None and r["member"] for r in rows["annotators"])
    assert "alice" not in str(rows)
