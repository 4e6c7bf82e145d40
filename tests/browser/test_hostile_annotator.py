"""Script injection on the annotator's side, in a real browser: prompts, completions, a
rationale, instructions, a username and a project name made of hostile text run nothing and
read as the characters they are, in the full page and in the parts htmx swaps in."""

from __future__ import annotations

import pytest

from annotate.models import Comparison, Judgment, Membership, Project

from ..factories import ComparisonFactory, MembershipFactory, UserFactory
from .hostile import ALL_TEXT, CORPUS, assert_inert, assert_shown, watch
from .test_annotating import log_in, shown_comparison

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NAME = CORPUS[4].text + " " + CORPUS[0].text
USERNAME = CORPUS[1].text


def _hostile_pair(project: Project, n: int) -> Comparison:
    comparison = ComparisonFactory(project=project)
    comparison.prompt.messages = [{"role": "user", "content": p.text} for p in CORPUS] + [
        {"role": "assistant", "content": f"Pair {n}."}
    ]
    comparison.prompt.save()
    comparison.completion_a.text = ALL_TEXT
    comparison.completion_a.save()
    comparison.completion_b.text = "\n\n".join(p.text for p in reversed(CORPUS))
    comparison.completion_b.save()
    return comparison


def _check_task(page, fetched: list[str], where: str) -> None:
    assert_inert(page, fetched, where)
    assert_shown(page.locator("#prompt").inner_text(), CORPUS, f"{where}, prompt", markdown=True)
    for side in ("left", "right"):
        text = page.locator(f"#{side} .md").inner_text()
        assert_shown(text, CORPUS, f"{where}, {side} completion", markdown=True)


def test_hostile_text_on_the_annotate_page_stays_text(page, live_server, team):
    project = team.project
    project.name = NAME
    project.instructions = ALL_TEXT
    project.rationale = Project.Rationale.OPTIONAL
    project.save()
    first, second = _hostile_pair(project, 1), _hostile_pair(project, 2)
    annotator = UserFactory(username=USERNAME)
    MembershipFactory(project=project, user=annotator, role=Membership.Role.ANNOTATOR)
    fetched = watch(page)

    log_in(page, live_server, USERNAME)
    assert_inert(page, fetched, "project list")
    assert_shown(
        page.locator("#projects").inner_text(), CORPUS[4:5], "project list", markdown=False
    )
    assert page.locator("header .who").inner_text() == USERNAME

    page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    page.wait_for_selector("#judge-form")
    assert NAME in page.title()
    page.click("#instructions summary")
    assert shown_comparison(page) == first.pk
    _check_task(page, fetched, "annotate page")
    instructions = page.locator("#instructions .prose").inner_text()
    assert_shown(instructions, CORPUS, "instructions on the annotate page", markdown=True)

    # judged with a hostile rationale, the next pair comes in through htmx
    rationale = page.locator("textarea[name=rationale]")
    rationale.fill(ALL_TEXT)
    page.click("#judge-form button[data-choice=left]")
    page.wait_for_function(
        f"() => document.getElementById('task').dataset.comparison == {second.pk}"
    )
    _check_task(page, fetched, "the next pair, swapped in")
    assert page.locator("textarea[name=rationale]").input_value() == ""
    stored = Judgment.objects.get(comparison=first, annotator=annotator)
    assert stored.rationale.replace("\r\n", "\n") == ALL_TEXT

    # undone, the first pair comes back through htmx
    page.click("#undo-button")
    page.wait_for_function(
        f"() => document.getElementById('task').dataset.comparison == {first.pk}"
    )
    _check_task(page, fetched, "the undone pair, swapped in")
    assert not Judgment.objects.filter(comparison=first).exists()

    page.goto(f"{live_server.url}/projects/{project.pk}/instructions/")
    assert_inert(page, fetched, "instructions page")
    instructions = page.locator("section.prose").inner_text()
    assert_shown(instructions, CORPUS, "instructions page", markdown=True)
    assert NAME in page.locator("h1").inner_text()
    assert page.js_errors == []


def test_a_hostile_username_on_a_failed_login_comes_back_as_typed(page, live_server, team):
    fetched = watch(page)
    typed = " ".join(p.text for p in CORPUS)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", typed)
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    page.wait_for_selector("p.error")
    assert_inert(page, fetched, "failed login")
    assert page.locator("input[name=username]").input_value() == typed
