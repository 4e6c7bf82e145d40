"""The lead's loop page, its live status partial, its actions, and the settings fields."""

from __future__ import annotations

from typing import Any

from django.test import Client

from annotate.models import Membership, Project
from tests.conftest import api_for
from tests.factories import MembershipFactory, UserFactory
from training import services
from training.models import ProjectLoop, Round

from .test_rounds import _run_round


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _lead(project: Project) -> Any:
    return project.memberships.get(role=Membership.Role.LEAD).user


def test_it_shows_the_loop_page_to_a_lead(loop_project: Project) -> None:
    _run_round(loop_project)
    response = _client(_lead(loop_project)).get(f"/projects/{loop_project.pk}/loop/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "Promoted" in body and "<svg" in body and 'id="loop-status"' in body


def test_it_returns_the_status_partial_to_htmx(loop_project: Project) -> None:
    with services.in_process():
        services.start_round(loop_project)
    response = _client(_lead(loop_project)).get(
        f"/projects/{loop_project.pk}/loop/status/", HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="loop-live"')
    assert 'hx-trigger="every 2s' in body and "Generating" in body
    # one partial holds the card, the plots and both tables, so they update together
    for part in ('id="loop-status"', 'id="plots"', 'id="rounds"', 'id="versions"'):
        assert part in body


def test_it_hides_the_loop_from_annotators_and_outsiders(loop_project: Project) -> None:
    annotator = UserFactory(username="ann")
    MembershipFactory(project=loop_project, user=annotator)
    assert _client(annotator).get(f"/projects/{loop_project.pk}/loop/").status_code == 403
    outsider = UserFactory(username="out")
    assert _client(outsider).get(f"/projects/{loop_project.pk}/loop/").status_code == 404


def test_it_starts_a_round_from_the_button(
    loop_project: Project, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _client(_lead(loop_project)).post(f"/projects/{loop_project.pk}/loop/start/")
    assert response.status_code == 302
    assert Round.objects.get(project=loop_project).state == Round.State.GENERATING
    assert len(callbacks) == 1


def test_it_escapes_model_text(loop_project: Project) -> None:
    _run_round(loop_project)
    loop_round = Round.objects.get(project=loop_project)
    Round.objects.filter(pk=loop_round.pk).update(error="<script>alert(1)</script>")
    body = _client(_lead(loop_project)).get(f"/projects/{loop_project.pk}/loop/").content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;" in body


def test_it_validates_loop_settings_on_patch(loop_project: Project) -> None:
    api = api_for(_lead(loop_project))
    url = f"/api/projects/{loop_project.pk}/"
    bad = api.patch(url, {"loop_settings": {"k": 1}}, format="json")
    assert bad.status_code == 400 and "k" in str(bad.json())
    bad = api.patch(url, {"loop_settings": {"dpo": {"beta": -1}}}, format="json")
    assert bad.status_code == 400 and "beta" in str(bad.json())
    bad = api.patch(url, {"base_model": "/no/such/dir"}, format="json")
    assert bad.status_code == 400
    good = api.patch(
        url, {"loop_settings": {"k": 3, "trigger": "manual"}, "base_model": "demo"}, format="json"
    )
    assert good.status_code == 200, good.json()
    assert ProjectLoop.of(loop_project).settings == {"k": 3, "trigger": "manual"}
    assert ProjectLoop.of(loop_project).base_model == "demo"


def test_it_lists_rounds_through_the_api(loop_project: Project) -> None:
    _run_round(loop_project)
    data = api_for(_lead(loop_project)).get(f"/api/projects/{loop_project.pk}/rounds/").json()
    assert data[0]["state"] == "promoted" and data[0]["new_version"] == 1
