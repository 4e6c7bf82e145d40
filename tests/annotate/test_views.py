from __future__ import annotations

import re

import pytest
from django.test import Client

from annotate.models import Comparison, Judgment, Project, Prompt

XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(comparison|client_id)" value="([^"]+)"', html))


def test_login_page_and_redirect(team):
    r = Client().get("/")
    assert r.status_code == 302 and r["Location"].startswith("/accounts/login/")
    r = Client().post("/accounts/login/", {"username": "alice", "password": "pw"})
    assert r.status_code == 302 and r["Location"] == "/"


def test_home_lists_only_my_projects(team):
    html = login(team.alice).get("/").content.decode()
    assert "Team project" in html and "Other project" not in html


def test_outsiders_get_404_everywhere(team):
    client = login(team.outsider)
    pid = team.project.pk
    for url in ("", "settings/", "annotate/", "instructions/"):
        assert client.get(f"/projects/{pid}/{url}").status_code == 404
    assert (
        client.post(f"/projects/{pid}/members/", {"username": "x", "role": "lead"}).status_code
        == 404
    )


def test_annotators_cannot_manage(team):
    client = login(team.alice)
    pid = team.project.pk
    assert client.get(f"/projects/{pid}/settings/").status_code == 403
    r = client.post(f"/projects/{pid}/import/", {"kind": "prompts", "text": '{"prompt": "x"}'})
    assert r.status_code == 403
    assert Prompt.objects.count() == 0
    html = client.get(f"/projects/{pid}/").content.decode()
    assert "Import" not in html and "Members" not in html


def test_lead_creates_a_project(team):
    client = login(team.lead)
    r = client.post(
        "/projects/new/",
        {
            "name": "Chat quality",
            "instructions": "# Be fair",
            "overlap": 2,
            "rationale": "optional",
            "lease_seconds": 600,
            "undo_seconds": 60,
        },
    )
    project = Project.objects.get(name="Chat quality")
    assert r.status_code == 302 and r["Location"] == f"/projects/{project.pk}/"
    assert project.role_of(team.lead) == "lead"
    assert login(team.alice).get("/projects/new/").status_code == 403


def test_lead_edits_settings_and_adds_members(team):
    client = login(team.lead)
    pid = team.project.pk
    r = client.post(f"/projects/{pid}/settings/", {
        "name": "Renamed", "instructions": "", "overlap": 3, "rationale": "required",
        "show_strength": "on", "lease_seconds": 300, "undo_seconds": 10,
    })  # fmt: skip
    assert r.status_code == 302
    team.project.refresh_from_db()
    assert (team.project.name, team.project.overlap, team.project.show_strength) == (
        "Renamed",
        3,
        True,
    )
    client.post(f"/projects/{pid}/members/", {"username": "mallory", "role": "annotator"})
    assert team.project.role_of(team.outsider) == "annotator"
    r = client.post(
        f"/projects/{pid}/members/", {"username": "ghost", "role": "annotator"}, follow=True
    )
    assert "No user named" in r.content.decode()


def test_lead_imports_pasted_jsonl(team):
    client = login(team.lead)
    text = '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "a"}\n'
    r = client.post(
        f"/projects/{team.project.pk}/import/", {"kind": "prompts", "text": text}, follow=True
    )
    assert "2 prompts added, 1 duplicate prompts skipped" in r.content.decode()
    assert Prompt.objects.filter(project=team.project).count() == 2


def test_lead_import_error_names_the_line_and_writes_nothing(team):
    client = login(team.lead)
    text = '{"prompt": "a", "completion_a": "x", "completion_b": "y"}\n{"prompt": "b", "completion_a": "x"}\n'
    r = client.post(
        f"/projects/{team.project.pk}/import/", {"kind": "pairs", "text": text}, follow=True
    )
    assert "Nothing was imported: line 2: &quot;completion_b&quot; is missing" in r.content.decode()
    assert Comparison.objects.count() == 0 and Prompt.objects.count() == 0


def test_lead_uploads_a_file(team):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("p.jsonl", b'{"prompt": "caf\xc3\xa9?"}\n')
    r = login(team.lead).post(
        f"/projects/{team.project.pk}/import/", {"kind": "prompts", "file": upload}, follow=True
    )
    assert "1 prompts added" in r.content.decode()
    assert Prompt.objects.get().messages[0]["content"] == "café?"


def test_annotating_without_javascript(team):
    team.project.show_strength = True
    team.project.rationale = Project.Rationale.OPTIONAL
    team.project.save()
    team.pairs(2)
    client = login(team.alice)
    url = f"/projects/{team.project.pk}/annotate/"
    html = client.get(url).content.decode()
    fields = form_fields(html)
    r = client.post(
        url + "judge/", {**fields, "choice": "right", "strength": "3", "rationale": "clearer"}
    )
    assert r.status_code == 302 and r["Location"] == url
    j = Judgment.objects.get()
    assert (j.strength, j.rationale, j.duration_ms) == (3, "clearer", None)
    # A double submit of the same form stores nothing new.
    client.post(
        url + "judge/", {**fields, "choice": "right", "strength": "3", "rationale": "clearer"}
    )
    assert Judgment.objects.count() == 1
    html = client.get(url).content.decode()
    assert 'id="undo-button"' in html
    second = form_fields(html)
    client.post(url + "skip/", {"comparison": second["comparison"]})
    html = client.get(url).content.decode()
    # The skipped pair comes back once nothing else is left; a second skip ends it.
    assert form_fields(html)["comparison"] == second["comparison"]
    client.post(url + "skip/", {"comparison": second["comparison"]})
    html = client.get(url).content.decode()
    assert 'id="all-done"' in html
    client.post(url + "undo/")
    assert Judgment.objects.count() == 0
    assert form_fields(client.get(url).content.decode())["comparison"] == fields["comparison"]


def test_htmx_gets_the_task_partial(team):
    team.pairs(2)
    client = login(team.alice)
    url = f"/projects/{team.project.pk}/annotate/"
    fields = form_fields(client.get(url).content.decode())
    r = client.post(url + "judge/", {**fields, "choice": "tie"}, HTTP_HX_REQUEST="true")
    html = r.content.decode()
    assert r.status_code == 200
    assert html.lstrip().startswith('<section id="task"')
    assert "<html" not in html
    assert form_fields(html)["comparison"] != fields["comparison"]


def test_required_rationale_is_enforced_in_the_page(team):
    team.project.rationale = Project.Rationale.REQUIRED
    team.project.save()
    team.pairs(1)
    client = login(team.alice)
    url = f"/projects/{team.project.pk}/annotate/"
    fields = form_fields(client.get(url).content.decode())
    r = client.post(url + "judge/", {**fields, "choice": "left"}, HTTP_HX_REQUEST="true")
    assert r.status_code == 400
    assert "asks for a reason" in r.content.decode()
    assert Judgment.objects.count() == 0


@pytest.mark.parametrize("payload", [XSS, "<b>bold</b> & <i>"])
def test_model_text_is_escaped(team, payload):
    comparison = team.pairs(1)[0]
    comparison.completion_a.text = payload
    comparison.completion_a.save()
    comparison.prompt.messages = [{"role": "user", "content": payload}]
    comparison.prompt.save()
    html = login(team.alice).get(f"/projects/{team.project.pk}/annotate/").content.decode()
    assert payload not in html
    assert "&lt;script&gt;" in html or "&lt;b&gt;" in html


def test_instructions_markdown_is_sanitised(team):
    team.project.instructions = "**Bold** <script>alert(1)</script> [x](javascript:alert(1))"
    team.project.save()
    html = login(team.alice).get(f"/projects/{team.project.pk}/instructions/").content.decode()
    assert "<strong>Bold</strong>" in html
    assert "<script>alert(1)</script>" not in html
    assert "javascript:" not in html


def test_completions_render_markdown_without_raw_html(team):
    comparison = team.pairs(1)[0]
    comparison.completion_a.text = "**Bold** and\n```python\nif a < b:\n    pass\n```\n[x](javascript:alert(1)) ![t](http://evil.example/t.png)"
    comparison.completion_a.save()
    html = login(team.alice).get(f"/projects/{team.project.pk}/annotate/").content.decode()
    assert "<strong>Bold</strong>" in html
    assert "<pre><code" in html and "if a &lt; b:" in html
    assert "javascript:" not in html and "evil.example" not in html


def test_admin_works_for_superusers(team):
    team.pairs(1)
    admin = team.lead
    admin.is_superuser = admin.is_staff = True
    admin.save()
    client = login(admin)
    for model in ("project", "prompt", "completion", "comparison", "assignment", "judgment"):
        assert client.get(f"/admin/annotate/{model}/").status_code == 200
    assert login(team.alice).get("/admin/annotate/project/").status_code == 302
