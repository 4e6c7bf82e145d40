"""An annotator in a real browser: log in, judge with the keyboard, undo."""

from __future__ import annotations

import pytest

from annotate.models import Judgment

from ..factories import ComparisonFactory

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

XSS_PROMPT = "Explain this: <script>alert('prompt')</script>"
XSS_LEFT = "<img src=x onerror=alert('img')> and <script>alert('completion')</script>"


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def shown_comparison(page) -> int:
    return int(page.locator("#task").get_attribute("data-comparison"))


def press_and_wait(page, key: str, *, previous: int | None) -> None:
    page.keyboard.press(key)
    if previous is None:
        return
    page.wait_for_function(
        "prev => { const t = document.getElementById('task');"
        " return t && t.dataset.comparison !== String(prev); }",
        arg=previous,
    )


def test_annotator_judges_with_the_keyboard_and_undoes(page, live_server, team):
    pairs = [ComparisonFactory(project=team.project) for _ in range(4)]
    xss = pairs[0]
    xss.prompt.messages = [{"role": "user", "content": XSS_PROMPT}]
    xss.prompt.save()
    xss.completion_a.text = XSS_LEFT
    xss.completion_a.save()

    log_in(page, live_server, "alice")
    assert "Team project" in page.content()
    page.click("text=Annotate")
    page.wait_for_url("**/annotate/")
    page.wait_for_load_state("load")
    page.wait_for_selector("#judge-form")

    # The help overlay opens and closes with "?".
    page.keyboard.press("?")
    page.wait_for_selector("#help[open]", state="visible")
    assert "Both bad" in page.locator("#help").inner_text()
    page.keyboard.press("?")
    page.wait_for_selector("#help", state="hidden")
    assert page.js_errors == []

    done: dict[int, str] = {}
    keys = [("1", "left"), ("ArrowRight", "right"), ("t", "tie")]
    for key, shown in keys:
        current = shown_comparison(page)
        press_and_wait(page, key, previous=current)
        done[current] = shown

    # Undo brings the last judged pair back.
    last = list(done)[-1]
    page.wait_for_selector("#undo-button")
    press_and_wait(page, "u", previous=shown_comparison(page))
    assert shown_comparison(page) == last
    del done[last]
    # Judge it differently, then the fourth pair as both bad.
    press_and_wait(page, "4", previous=last)
    done[last] = "both_bad"
    current = shown_comparison(page)
    page.keyboard.press("b")
    page.wait_for_selector("#all-done")
    done[current] = "both_bad"

    stored = {
        j.comparison_id: j.shown_choice for j in Judgment.objects.filter(annotator=team.alice)
    }
    assert stored == done
    assert Judgment.objects.count() == 4
    assert all(j.duration_ms is not None and j.duration_ms >= 0 for j in Judgment.objects.all())
    assert page.js_dialogs == []


def test_model_text_shows_as_text(page, live_server, team):
    comparison = ComparisonFactory(project=team.project)
    comparison.prompt.messages = [{"role": "user", "content": XSS_PROMPT}]
    comparison.prompt.save()
    comparison.completion_a.text = XSS_LEFT
    comparison.completion_a.save()
    comparison.completion_b.text = "<b>not bold</b>"
    comparison.completion_b.save()

    log_in(page, live_server, "bob")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/annotate/")
    page.wait_for_selector("#judge-form")
    texts = page.locator("#left .md").inner_text() + page.locator("#right .md").inner_text()
    assert XSS_LEFT in texts and "<b>not bold</b>" in texts
    assert XSS_PROMPT in page.locator("#prompt").inner_text()
    assert page.locator("#task img").count() == 0
    assert page.locator("#task b").count() == 0
    assert page.js_dialogs == []


def test_narrow_screens_stack_the_completions(page, live_server, team):
    ComparisonFactory(project=team.project)
    page.set_viewport_size({"width": 400, "height": 800})
    log_in(page, live_server, "alice")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/annotate/")
    left = page.locator("#left").bounding_box()
    right = page.locator("#right").bounding_box()
    assert right["y"] >= left["y"] + left["height"] - 1
