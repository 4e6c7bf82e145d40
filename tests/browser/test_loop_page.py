"""The lead's loop page in a real browser: it updates live, its settings form, phone width."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from annotate import services as annotate_services
from annotate.models import Project
from tests.factories import ComparisonFactory
from training import services
from training.models import ModelVersion, ProjectLoop, Round

from .test_annotating import log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _evaluating(project: Project) -> tuple[Round, ModelVersion]:
    """Round 1 trained v1 from base; the gate is deciding."""
    base = services.base_version(project)
    loop_round = Round.objects.create(
        project=project, number=1, policy=base, state=Round.State.EVALUATING
    )
    v1 = ModelVersion.objects.create(
        project=project,
        number=1,
        spec="v1-dir",
        parent=base,
        trained_in=loop_round,
        metrics={
            "heldout_before": {"reward_accuracy": 0.5, "margin": 0.0, "chosen_logp": -40.0},
            "heldout_after": {"reward_accuracy": 0.75, "margin": 0.3, "chosen_logp": -39.5},
            "num_heldout_pairs": 4,
            "run": {"loss": 0.66},
        },
    )
    return loop_round, v1


def test_the_versions_table_follows_a_promotion_without_reload(page, live_server, team):
    loop_round, v1 = _evaluating(team.project)
    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/loop/")
    assert page.locator('#versions tr[data-version="v1"]').get_attribute("data-state") == (
        "candidate"
    )
    assert page.locator("#serving-label").inner_text() == "base"

    # the gate promotes v1 (as the worker would)
    services.promote(v1)
    Round.objects.filter(pk=loop_round.pk).update(state=Round.State.PROMOTED)

    page.wait_for_selector('#versions tr[data-version="v1"][data-state="serving"]', timeout=10_000)
    # the card, the rounds table and the versions table agree
    assert page.locator("#serving-label").inner_text() == "v1"
    assert page.locator('#rounds tr[data-round="1"] .state').inner_text() == "Promoted"
    assert page.locator("#round-state").inner_text() == "Promoted"
    base_row = page.locator('#versions tr[data-version="base"]')
    assert base_row.get_attribute("data-state") == "retired"
    assert "Roll back to base" in base_row.inner_text()
    assert page.locator("#start-round").inner_text() == "Start round 2"
    assert page.js_errors == []


def test_the_settings_form_saves_and_shows_errors_by_their_field(page, live_server, team):
    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/loop/")
    prompts = page.get_by_label("Prompts per round")
    assert prompts.input_value() == "16"
    assert "Default: 16." in page.locator("#field-prompts_per_round").inner_text()
    prompts.fill("8")
    page.get_by_label("Trigger").select_option("manual")
    page.click("#save-settings")
    page.wait_for_selector(".msg.success")
    assert ProjectLoop.of(team.project).settings == {"prompts_per_round": 8, "trigger": "manual"}
    assert page.get_by_label("Prompts per round").input_value() == "8"

    page.get_by_label("Top p").fill("1.5")
    page.click("#save-settings")
    error = page.locator("#field-top_p .field-error")
    error.wait_for()
    assert "between 0 and 1" in error.inner_text()
    assert page.get_by_label("Top p").input_value() == "1.5"
    assert page.get_by_label("Prompts per round").input_value() == "8"
    assert ProjectLoop.of(team.project).settings == {"prompts_per_round": 8, "trigger": "manual"}


def _no_sideways_scroll(page: Any) -> int:
    return int(page.evaluate("document.scrollingElement.scrollWidth"))


def test_the_loop_page_and_project_list_fit_a_phone(browser, live_server, team):
    _evaluating(team.project)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        log_in(page, live_server, "lead")
        assert _no_sideways_scroll(page) <= 390
        page.goto(f"{live_server.url}/projects/{team.project.pk}/loop/")
        page.wait_for_selector("#versions")
        assert _no_sideways_scroll(page) <= 390
        # the wide tables scroll inside their card instead
        assert page.evaluate(
            "(() => { const t = document.querySelector('#rounds').parentElement;"
            " return t.scrollWidth > t.clientWidth; })()"
        )
    finally:
        context.close()


def test_train_now_below_target_says_how_many_pairs_and_asks_first(page, live_server, team):
    base = services.base_version(team.project)
    loop_round = Round.objects.create(
        project=team.project, number=1, policy=base, state=Round.State.COLLECTING
    )
    for _ in range(3):
        ComparisonFactory(project=team.project, round=1)
    assignment = annotate_services.next_assignment(team.project, team.alice)
    data = annotate_services.JudgmentInput(choice="left", client_id=uuid.uuid4())
    annotate_services.submit_judgment(team.alice, assignment.comparison.pk, data)

    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/loop/")
    assert not page.locator("#train-confirm").is_visible()
    page.click("#train-now")
    offer = page.locator("#train-offer").inner_text()
    assert "Train now on 1 pair" in offer and "1 of the round's 3 judgments" in offer
    page.wait_for_timeout(2500)  # a poll would close the confirmation; it waits instead
    page.click("#train-confirm")
    page.wait_for_selector(".msg.success")
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.TRAINING
    assert loop_round.latest_run().num_pairs == 1
