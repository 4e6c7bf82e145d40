"""The loop page's guidance: the primary action per state, the gate's reasons after a
rejection, roll-back only to served versions, the parent column, the confirmation before
training below target, and the labelled settings form."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.test import Client

from annotate import services as annotate_services
from tests.factories import ComparisonFactory
from training import services
from training.models import ModelVersion, ProjectLoop, Round

pytestmark = pytest.mark.django_db


def _page(team: Any, url: str = "") -> str:
    client = Client()
    client.force_login(team.lead)
    response = client.get(f"/projects/{team.project.pk}/loop/{url}")
    assert response.status_code == 200
    return response.content.decode()


def _primary_buttons(body: str) -> list[str]:
    """The text of each primary button or link on the page."""
    found = re.findall(
        r'<(?:button|a)[^>]*class="[^"]*\bprimary\b[^"]*"[^>]*>(.*?)</(?:button|a)>', body, re.S
    )
    return [re.sub(r"\s+", " ", text).strip() for text in found]


def _rejected_round(team: Any) -> tuple[Round, ModelVersion, ModelVersion]:
    base = services.base_version(team.project)
    loop_round = Round.objects.create(
        project=team.project,
        number=1,
        policy=base,
        state=Round.State.REJECTED,
        error="win rate 0.31 [0.20, 0.45] is below the required 0.50",
    )
    v1 = ModelVersion.objects.create(
        project=team.project,
        number=1,
        spec="x",
        parent=base,
        trained_in=loop_round,
        state=ModelVersion.State.REJECTED,
        gate={
            "mode": "simulated",
            "judge": "contains:please",
            "opponent": "base",
            "win_rate": 0.31,
            "ci95": [0.2, 0.45],
            "prompts": 30,
            "comparisons": 120,
            "criterion": {"min_win_rate": 0.5, "margin": 0.1},
            "passed": False,
            "decision": "rejected",
            "reasons": ["win rate 0.31 [0.20, 0.45] is below the required 0.50"],
        },
    )
    return loop_round, base, v1


def test_it_makes_start_the_primary_action_with_no_round(team: Any) -> None:
    assert _primary_buttons(_page(team))[0] == "Start round 1"


def test_it_offers_no_start_while_a_round_is_open(team: Any) -> None:
    base = services.base_version(team.project)
    loop_round = Round.objects.create(
        project=team.project, number=1, policy=base, state=Round.State.COLLECTING
    )
    ComparisonFactory(project=team.project, round=loop_round.number)
    body = _page(team)
    assert 'id="start-round"' not in body
    assert "Start" not in " ".join(_primary_buttons(body))
    assert _primary_buttons(body) == ["Judge pairs"]


def test_it_says_why_the_gate_rejected_and_offers_the_next_round(team: Any) -> None:
    _rejected_round(team)
    body = _page(team)
    rejection = body[body.index('id="rejection"') :]
    assert "The gate rejected v1" in rejection
    assert "below the required 0.50" in rejection
    assert "30 dev prompts" in rejection and "at least 0.40" in rejection
    assert "base keeps serving" in rejection
    assert _primary_buttons(body)[0] == "Start round 2"


def test_it_rolls_back_only_to_versions_that_served(team: Any) -> None:
    _, base, v1 = _rejected_round(team)
    # v2 trained from base, promoted, serving; v1 was rejected and never served
    loop_round = Round.objects.create(
        project=team.project, number=2, policy=base, state=Round.State.PROMOTED
    )
    services.promote(
        ModelVersion.objects.create(
            project=team.project, number=2, spec="y", parent=base, trained_in=loop_round
        )
    )
    body = _page(team)
    versions = body[
        body.index('id="versions"') : body.index("</table>", body.index('id="versions"'))
    ]
    assert "Roll back to base" in versions
    assert "Roll back to v1" not in versions and "Promote v1" not in versions
    assert "never served" in versions
    # the parent column
    row = re.search(r'<tr data-version="v2".*?</tr>', versions, re.S)
    assert row is not None and '<td class="parent">base</td>' in row.group(0)

    client = Client()
    client.force_login(team.lead)
    client.post(f"/projects/{team.project.pk}/loop/versions/{v1.pk}/promote/")
    v1.refresh_from_db()
    assert v1.state == ModelVersion.State.REJECTED


def test_it_asks_before_training_below_target(team: Any) -> None:
    base = services.base_version(team.project)
    loop_round = Round.objects.create(
        project=team.project, number=1, policy=base, state=Round.State.COLLECTING
    )
    for _ in range(2):
        ComparisonFactory(project=team.project, round=1)
    assignment = annotate_services.next_assignment(team.project, team.alice)
    assert assignment is not None
    data = annotate_services.JudgmentInput(choice="left", client_id=uuid.uuid4())
    annotate_services.submit_judgment(team.alice, assignment.comparison.pk, data)
    body = _page(team)
    assert re.search(r"Train now on <strong>1 pair</strong>", body)
    assert "with 1 of the round's 2 judgments in" in body

    client = Client()
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/loop/rounds/{loop_round.pk}/train/"
    client.post(url)
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.COLLECTING  # not without the confirmation
    client.post(url, {"confirm": "1"})
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.TRAINING
    assert loop_round.latest_run().num_pairs == 1


def test_it_shows_the_settings_as_labelled_fields_with_defaults(team: Any) -> None:
    body = _page(team)
    form = body[body.index('id="settings"') :]
    assert '<label for="id_prompts_per_round">Prompts per round</label>' in form
    assert "Completions sampled per prompt by the serving version." in form
    assert "Default: 16." in form
    assert 'name="loop_settings"' not in form


def test_it_saves_settings_from_the_form(team: Any) -> None:
    client = Client()
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/loop/settings/"
    form = {
        "base_model": "demo",
        "k": "3",
        "trigger": "manual",
        "auto_next_round": "on",
        "temperature": "0.8",
    }
    response = client.post(url, form)
    assert response.status_code == 302
    assert ProjectLoop.of(team.project).settings == {"k": 3, "trigger": "manual"}


def test_it_shows_an_out_of_range_value_next_to_its_field(team: Any) -> None:
    ProjectLoop.store(team.project, base_model="demo", settings={"k": 3})
    client = Client()
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/loop/settings/"
    response = client.post(url, {"base_model": "demo", "k": "4", "top_p": "1.5"})
    assert response.status_code == 400
    body = response.content.decode()
    field = body[
        body.index('id="field-top_p"') : body.index(
            'id="field-', body.index('id="field-top_p"') + 5
        )
    ]
    assert 'class="field-error"' in field and "between 0 and 1" in field
    assert 'value="1.5"' in field  # what was typed stays
    assert ProjectLoop.of(team.project).settings == {"k": 3}  # nothing written
    response = client.post(url, {"base_model": "demo", "k": "two"})
    assert response.status_code == 400 and "enter a whole number" in response.content.decode()


def test_it_shows_generation_progress_with_pace_and_time_left(team: Any) -> None:
    base = services.base_version(team.project)
    Round.objects.create(
        project=team.project,
        number=1,
        policy=base,
        state=Round.State.GENERATING,
        progress_done=8,
        progress_total=20,
        stats={"tokens_per_s": 412.5, "eta_s": 37.2},
    )
    client = Client()
    client.force_login(team.lead)
    body = client.get(
        f"/projects/{team.project.pk}/loop/status/", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert '<span id="generated">8 / 20</span>' in body
    assert "412.5 tokens/s" in body and "about 37 s left" in body
    assert 'hx-trigger="every 2s' in body
    rounds = body[body.index('id="rounds"') :]
    assert "Generating" in rounds  # the table and the card show the same state
