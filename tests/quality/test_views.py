"""The Quality page, its forms, and what a paused annotator sees."""

from __future__ import annotations

from django.test import Client

from annotate.models import Membership
from annotate.quality import gold

from .helpers import judge

XSS = "<script>alert(1)</script>"


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _url(team, rest=""):
    return f"/projects/{team.project.pk}/{rest}"


def test_the_project_page_links_leads_to_quality(team):
    assert _url(team, "quality/") in login(team.lead).get(_url(team)).content.decode()
    assert _url(team, "quality/") not in login(team.alice).get(_url(team)).content.decode()


def test_only_leads_see_the_quality_page(team):
    assert login(team.alice).get(_url(team, "quality/")).status_code == 403
    assert login(team.outsider).get(_url(team, "quality/")).status_code == 404
    assert login(team.outsider).post(_url(team, "quality/gold/")).status_code == 404
    assert login(team.alice).post(_url(team, "quality/resume/")).status_code == 403


def test_the_page_shows_agreement_and_annotators(team):
    for c in team.pairs(10):
        judge(team.alice, c, "a")
        judge(team.bob, c, "b")
    html = login(team.lead).get(_url(team, "quality/")).content.decode()
    assert 'id="fleiss-kappa"' in html and 'data-annotator="alice"' in html
    assert 'id="cohen"' in html
    html = login(team.lead).get(_url(team, "quality/") + "?names=pseudonyms").content.decode()
    assert 'data-annotator="alice"' not in html and 'data-annotator="ann-' in html


def test_a_lead_marks_gold_on_the_page(team):
    (c,) = team.pairs(1)
    client = login(team.lead)
    r = client.post(_url(team, "quality/gold/"), {"comparison": c.pk, "answer": "b"})
    assert r.status_code == 302
    c.refresh_from_db()
    assert c.gold_choice == "b"
    html = client.get(_url(team, "quality/")).content.decode()
    assert 'id="gold-pairs"' in html
    r = client.post(_url(team, "quality/gold/"), {"comparison": "x", "answer": "b"}, follow=True)
    assert "give the pair" in r.content.decode()
    client.post(_url(team, "quality/gold/"), {"comparison": c.pk, "answer": "none"})
    c.refresh_from_db()
    assert c.gold_choice == ""


def test_a_paused_annotator_sees_why_and_the_lead_resumes(team):
    team.pairs(2)
    gold.pause(team.lead, team.project, "alice", XSS)
    html = login(team.alice).get(_url(team, "annotate/")).content.decode()
    assert 'id="paused"' in html and "<script>alert(1)" not in html
    assert "&lt;script&gt;" in html
    lead = login(team.lead)
    page = lead.get(_url(team, "quality/")).content.decode()
    assert "Resume" in page and "<script>alert(1)" not in page
    r = lead.post(_url(team, "quality/resume/"), {"annotator": "alice"})
    assert r.status_code == 302
    assert not Membership.objects.get(project=team.project, user=team.alice).paused
    html = login(team.alice).get(_url(team, "annotate/")).content.decode()
    assert 'id="paused"' not in html and 'id="judge-form"' in html


def test_thresholds_are_on_the_settings_form(team):
    html = login(team.lead).get(_url(team, "settings/")).content.decode()
    for name in ("gold_min_items", "gold_min_accuracy", "fast_judgment_seconds"):
        assert f'name="{name}"' in html


def test_the_settings_form_saves_thresholds_and_keeps_them_when_left_out(team):
    client = login(team.lead)
    base = {"name": "Team project", "overlap": 1, "rationale": "off", "lease_seconds": 600}
    base["undo_seconds"] = 60
    r = client.post(_url(team, "settings/"), {**base, "gold_min_accuracy": "0.8"})
    assert r.status_code == 302
    team.project.refresh_from_db()
    assert team.project.gold_min_accuracy == 0.8
    client.post(_url(team, "settings/"), base)
    team.project.refresh_from_db()
    assert team.project.gold_min_accuracy == 0.8
    r = client.post(_url(team, "settings/"), {**base, "gold_min_accuracy": "2"})
    assert r.status_code == 200 and "less than or equal to 1" in r.content.decode()


def test_the_figures_refresh_as_a_partial(team):
    for c in team.pairs(3):
        judge(team.alice, c, "a")
    r = login(team.lead).get(_url(team, "quality/"), HTTP_HX_REQUEST="true")
    html = r.content.decode()
    assert html.lstrip().startswith('<div id="figures"') and "3 judgments" in html
    assert 'id="gold-form"' not in html
    assert login(team.alice).get(_url(team, "quality/"), HTTP_HX_REQUEST="true").status_code == 403


def test_hidden_names_stay_hidden_and_the_lead_resumes_by_pseudonym(team):
    from annotate.datasets.exporters import pseudonym

    gold.pause(team.lead, team.project, "alice", "Too fast.")
    lead = login(team.lead)
    html = lead.get(_url(team, "quality/") + "?names=pseudonyms").content.decode()
    assert "alice" not in html.split('id="annotators"')[1].split("</section>")[0]
    shown = pseudonym(team.project, f"user:{team.alice.pk}")
    r = lead.post(
        _url(team, "quality/resume/"), {"annotator": "ann-0000", "names": "pseudonyms"}, follow=True
    )
    assert "No member shown as" in r.content.decode()
    assert Membership.objects.get(project=team.project, user=team.alice).paused
    r = lead.post(_url(team, "quality/resume/"), {"annotator": shown, "names": "pseudonyms"})
    assert r.status_code == 302 and r["Location"].endswith("?names=pseudonyms")
    assert not Membership.objects.get(project=team.project, user=team.alice).paused
