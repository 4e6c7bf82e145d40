"""A skipped pair coming back to its annotator, and a stalled round explained to the lead."""

from __future__ import annotations

import pytest

from annotate import services as annotate_services
from annotate.models import Assignment, Judgment
from training import services
from training.models import Round

from ..factories import ComparisonFactory
from .test_annotating import log_in, press_and_wait, shown_comparison

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_skipped_pair_comes_back_after_the_rest(page, live_server, team):
    first, second = (ComparisonFactory(project=team.project) for _ in range(2))
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/annotate/")
    page.wait_for_selector("#judge-form")
    assert shown_comparison(page) == first.pk

    press_and_wait(page, "s", previous=first.pk)
    assert shown_comparison(page) == second.pk
    press_and_wait(page, "1", previous=second.pk)
    # Nothing else is left: the skipped pair is back.
    assert shown_comparison(page) == first.pk
    # A second skip lets it go for good.
    page.keyboard.press("s")
    page.wait_for_selector("#all-done")
    assert Assignment.objects.get(comparison=first, annotator=team.alice).skips == 2
    assert list(Judgment.objects.values_list("comparison_id", flat=True)) == [second.pk]
    assert page.js_errors == []


def test_the_lead_sees_why_a_round_is_stuck_and_releases_the_lease(page, live_server, team):
    team.project.overlap = 3
    team.project.save()
    Round.objects.create(
        project=team.project,
        number=1,
        policy=services.base_version(team.project),
        state=Round.State.COLLECTING,
    )
    pair = ComparisonFactory(project=team.project, round=1)
    for _ in range(2):
        annotate_services.next_assignment(team.project, team.bob)
        annotate_services.skip(team.project, team.bob, pair.pk)
    annotate_services.next_assignment(team.project, team.alice)

    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/loop/")
    stall = page.locator("#stall")
    stall.wait_for()
    text = stall.inner_text()
    assert "Round 1 cannot finish collecting" in text
    row = page.locator(f'#stall-pairs tr[data-comparison="{pair.pk}"]')
    assert "0 / 3" in row.inner_text()
    assert "alice until" in row.locator(".stall-leases").inner_text()
    assert row.locator(".stall-skips").inner_text() == "bob (twice)"
    assert "nothing to train on" in text and "Lower the target to 1 pair" in text

    page.click("#release-leases")
    page.wait_for_selector("#messages")
    assert "Released 1 lease" in page.locator("#messages").inner_text()
    assert Assignment.objects.get(comparison=pair, annotator=team.alice).status == "expired"
    assert (
        page.locator(f'#stall-pairs tr[data-comparison="{pair.pk}"] .stall-leases').inner_text()
        == "-"
    )
    assert page.js_errors == []
