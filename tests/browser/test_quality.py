"""Gold in a real browser: an annotator paused after failing gold sees why; the lead, on a
phone-sized Quality page, resumes them."""

from __future__ import annotations

import pytest

from annotate.models import Assignment, Membership
from annotate.quality import gold

from ..factories import ComparisonFactory
from .test_annotating import log_in, shown_comparison

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_paused_annotator_sees_why_and_the_lead_resumes_them(browser, page, live_server, team):
    project = team.project
    project.gold_min_items = 2
    project.gold_min_accuracy = 0.5
    project.gold_rate = 1.0  # gold first, while ordinary pairs are left
    project.save()
    gold_pairs = [ComparisonFactory(project=project) for _ in range(2)]
    for c in gold_pairs:
        gold.mark_gold(team.lead, project, c.pk, "a")
    for _ in range(2):
        ComparisonFactory(project=project)

    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    for _ in gold_pairs:
        page.wait_for_selector("#judge-form")
        current = shown_comparison(page)
        assignment = Assignment.objects.get(comparison_id=current, annotator=team.alice)
        # choose completion B, the wrong answer, whichever side it is shown on
        wrong = "right" if assignment.left_is_a else "left"
        page.click(f"#judge-form button[data-choice={wrong}]")
        page.wait_for_function(
            "prev => { const t = document.getElementById('task');"
            " return t && t.dataset.comparison !== String(prev); }",
            arg=current,
        )
    page.wait_for_selector("#paused")
    text = page.locator("#paused").inner_text()
    assert "paused" in text and "0 of your last 2 gold pairs" in text
    assert page.locator("#judge-form").count() == 0
    assert Membership.objects.get(project=project, user=team.alice).paused

    context = browser.new_context(viewport={"width": 390, "height": 844})
    lead = context.new_page()
    lead.set_default_timeout(15_000)
    errors: list[str] = []
    lead.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(lead, live_server, "lead")
    lead.goto(f"{live_server.url}/projects/{project.pk}/")
    lead.click("#quality-link")
    lead.wait_for_url("**/quality/")
    row = lead.locator('tr[data-annotator="alice"]')
    assert "Paused" in row.inner_text()
    # Usable at 390 px: the page itself never scrolls sideways (wide tables scroll in place).
    width = lead.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    row.locator("button.resume").click()
    lead.wait_for_url("**/quality/")
    assert "alice is resumed" in lead.content()
    assert "Active" in lead.locator('tr[data-annotator="alice"]').inner_text()
    assert errors == []
    context.close()

    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    page.wait_for_selector("#judge-form")
    assert page.locator("#paused").count() == 0
    assert page.js_errors == []
