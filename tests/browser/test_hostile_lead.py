"""Script injection on the lead's pages, in a real browser: project names, usernames (of
members and of imported annotators), prompts, instructions, the license, a round's error,
an upload's name and error, pasted lines, a system prompt and Playground answers made of
hostile text run nothing and read as the characters they are, polled partials included."""

from __future__ import annotations

from typing import Any

import pytest

from annotate import services as annotate_services
from annotate.models import DatasetJob, Judgment, Membership, Project
from annotate.quality import gold
from training import playground_views, services
from training.models import ModelVersion, Round

from ..factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory
from .hostile import ALL_TEXT, CORPUS, assert_inert, assert_shown, watch
from .test_annotating import log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

NAME = CORPUS[4].text + " " + CORPUS[7].text
LICENSE = CORPUS[1].text
# members named by the first half of the corpus, imported annotators by the second
MEMBERS, IMPORTED = CORPUS[:10], CORPUS[10:]
PREVIEW = 80  # characters of a prompt that tables show


@pytest.fixture
def hostile(team: Any) -> Project:
    """The team's project, its text and its people all hostile, in round 2, stalled."""
    project = team.project
    project.name, project.instructions, project.license = NAME, ALL_TEXT, LICENSE
    project.overlap = 50  # more than its members: round 2 cannot finish collecting
    project.save()
    members = [UserFactory(username=p.text) for p in MEMBERS]
    for user in members:
        MembershipFactory(project=project, user=user, role=Membership.Role.ANNOTATOR)
    base = services.base_version(project)
    # a gate verdict quoting hostile text: in the versions table and in the plot's SVG
    gate = {
        "decision": "rejected",
        "mode": "simulated",
        "judge": CORPUS[2].text,
        "reasons": [p.text for p in CORPUS],
        "win_rate": 0.4,
        "ci95": [0.3, 0.5],
        "opponent": CORPUS[1].text,
        "prompts": 10,
        "comparisons": CORPUS[0].text,
    }
    ModelVersion.objects.create(
        project=project,
        number=1,
        spec=base.spec,
        parent=base,
        state=ModelVersion.State.REJECTED,
        gate=gate,
    )
    Round.objects.create(
        project=project, number=1, policy=base, state=Round.State.FAILED, error=ALL_TEXT
    )
    Round.objects.create(project=project, number=2, policy=base, state=Round.State.COLLECTING)
    pairs = []
    for p in CORPUS:
        pair = ComparisonFactory(project=project, round=2)
        pair.prompt.messages = [{"role": "user", "content": p.text}]
        pair.prompt.save()
        pairs.append(pair)
    # imported annotators are named in the quality page's Cohen table: 10 shared pairs each
    Judgment.objects.bulk_create(
        Judgment(
            comparison=pair,
            project=project,
            source=Judgment.Source.IMPORTED,
            external_annotator=p.text,
            choice=Judgment.Choice.A,
            left_is_a=True,
        )
        for pair in pairs[:10]
        for p in IMPORTED
    )
    for pair in pairs[-3:]:
        gold.mark_gold(team.lead, project, pair.pk, "a")
    # a lease and two skips, so that member names show in the stall report
    annotate_services.next_assignment(project, members[0])
    for _ in range(2):
        lease = annotate_services.next_assignment(project, members[1])
        assert lease is not None
        annotate_services.skip(project, members[1], lease.comparison_id)
    DatasetJob.objects.create(
        project=project,
        kind=DatasetJob.Kind.IMPORT,
        format="jsonl",
        status=DatasetJob.Status.FAILED,
        filename=CORPUS[5].text,
        error=ALL_TEXT,
    )
    return project


def test_project_names_show_as_text_in_the_list_and_on_each_page(page, live_server, team):
    projects = [ProjectFactory(name=p.text) for p in CORPUS]
    for project in projects:
        MembershipFactory(project=project, user=team.lead, role=Membership.Role.LEAD)
    fetched = watch(page)
    log_in(page, live_server, "lead")
    assert_inert(page, fetched, "project list")
    assert_shown(page.locator("#projects").inner_text(), CORPUS, "project list", markdown=False)
    for p, project in zip(CORPUS, projects, strict=True):
        page.goto(f"{live_server.url}/projects/{project.pk}/")
        assert_inert(page, fetched, f"project page of {p.name}")
        assert page.locator("h1").inner_text() == p.text
        assert p.text in page.title()


def test_the_project_page_and_its_settings_keep_hostile_text_as_typed(
    page, live_server, team, hostile
):
    newcomer = UserFactory(username=CORPUS[11].text + "!")
    fetched = watch(page)
    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{hostile.pk}/")
    assert_inert(page, fetched, "project page")
    assert page.locator("h1").inner_text() == NAME
    members = page.locator("ul.members").inner_text()
    assert_shown(members, MEMBERS, "members", markdown=False)
    instructions = page.locator(".card.prose").inner_text()
    assert_shown(instructions, CORPUS, "instructions on the project page", markdown=True)

    # a member added by a hostile name: the confirmation names them as text
    page.fill("input[name=username]", newcomer.username)
    page.click("ul.members + form button[type=submit]")
    page.wait_for_selector("#messages")
    assert_inert(page, fetched, "member added")
    assert newcomer.username in page.locator("#messages").inner_text()
    assert Membership.objects.filter(project=hostile, user=newcomer).exists()

    # the settings form holds every value exactly, and saving it changes nothing
    page.goto(f"{live_server.url}/projects/{hostile.pk}/settings/")
    assert_inert(page, fetched, "settings page")
    assert page.locator("input[name=name]").input_value() == NAME
    assert page.locator("input[name=license]").input_value() == LICENSE
    instructions = page.locator("textarea[name=instructions]").input_value()
    assert instructions.replace("\r\n", "\n") == ALL_TEXT
    page.click("form.form button[type=submit]")
    page.wait_for_selector("#messages")
    assert_inert(page, fetched, "settings saved")
    hostile.refresh_from_db()
    assert (hostile.name, hostile.license) == (NAME, LICENSE)
    assert hostile.instructions.replace("\r\n", "\n") == ALL_TEXT


def test_quality_and_loop_pages_and_their_polled_parts_show_names_as_text(
    page, live_server, hostile
):
    fetched = watch(page)
    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{hostile.pk}/quality/")
    assert_inert(page, fetched, "quality page")
    names = page.locator("#annotators").inner_text()
    assert_shown(names, MEMBERS, "quality page, annotators", markdown=False)
    assert_shown(page.locator("#cohen").inner_text(), IMPORTED, "Cohen's kappa", markdown=False)
    gold = page.locator("#gold-pairs").inner_text()
    assert_shown(gold, CORPUS[-3:], "gold pairs' prompts", markdown=False, cut=PREVIEW)
    # the figures as htmx refreshes them
    with page.expect_response(lambda r: "/quality/" in r.url and r.request.method == "GET"):
        page.evaluate(
            "url => htmx.ajax('GET', url, {target: '#figures', swap: 'outerHTML'})",
            f"/projects/{hostile.pk}/quality/",
        )
    page.wait_for_timeout(300)
    assert_inert(page, fetched, "quality figures, refreshed")
    names = page.locator("#annotators").inner_text()
    assert_shown(names, MEMBERS, "refreshed annotators", markdown=False)
    assert_shown(page.locator("#cohen").inner_text(), IMPORTED, "refreshed Cohen", markdown=False)

    page.goto(f"{live_server.url}/projects/{hostile.pk}/loop/")
    page.wait_for_selector("#stall")
    assert_inert(page, fetched, "loop page")
    assert NAME in page.title()
    stall = page.locator("#stall").inner_text()
    assert_shown(stall, MEMBERS, "stalled round, who can judge", markdown=False)
    assert_shown(stall, CORPUS[:-3], "stalled round, prompts", markdown=False, cut=PREVIEW)
    versions = page.locator("#versions").inner_text()
    assert_shown(versions, CORPUS, "gate reasons", markdown=False)
    assert_shown(
        page.locator("#plot-gate-win-rate").inner_text(), CORPUS[:1], "plot", markdown=False
    )
    # the live part as its poll redraws it
    with page.expect_response(lambda r: "/loop/status/" in r.url, timeout=10_000):
        pass
    page.wait_for_timeout(300)
    assert_inert(page, fetched, "loop page, polled")
    assert_shown(page.locator("#stall").inner_text(), MEMBERS, "polled stall", markdown=False)

    # a hostile system prompt goes through the settings form and back
    page.fill("#id_system_prompt", ALL_TEXT)
    page.click("#save-settings")
    page.wait_for_selector("#messages")
    assert_inert(page, fetched, "loop settings saved")
    assert page.locator("#id_system_prompt").input_value().replace("\r\n", "\n") == ALL_TEXT


def test_dataset_pages_and_the_playground_show_hostile_text_as_text(
    page, live_server, hostile, monkeypatch
):
    def answer(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        if model.endswith(":v0"):
            return {"text": "", "error": f"500: {ALL_TEXT}", "finished": None}
        return {"text": ALL_TEXT, "error": None, "finished": False}

    monkeypatch.setattr(playground_views, "ask_model_server", answer)
    fetched = watch(page)
    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{hostile.pk}/datasets/")
    assert_inert(page, fetched, "datasets page")
    page.fill("#paste-text", ALL_TEXT)
    page.click("#paste button[type=submit]")
    page.wait_for_selector("#paste-error")
    assert_inert(page, fetched, "a rejected paste")
    assert page.locator("#paste-text").input_value().replace("\r\n", "\n") == ALL_TEXT
    assert "line 1" in page.locator("#paste-error").inner_text()

    job = DatasetJob.objects.get(project=hostile)
    page.goto(f"{live_server.url}/projects/{hostile.pk}/datasets/jobs/{job.pk}/")
    assert_inert(page, fetched, "failed import job")
    status = page.locator("#job-status").inner_text()
    assert_shown(status, CORPUS, "failed import job", markdown=False)

    page.goto(f"{live_server.url}/projects/{hostile.pk}/playground/")
    assert_inert(page, fetched, "playground")
    page.fill("#prompt", ALL_TEXT)
    page.select_option("select[name=left]", "1")
    page.select_option("select[name=right]", "0")
    page.click("#playground-send")
    page.wait_for_selector("#playground-results")
    assert_inert(page, fetched, "playground answers")
    assert page.locator("#prompt").input_value().replace("\r\n", "\n") == ALL_TEXT
    answers = page.locator("#playground-results .completion")
    assert_shown(answers.nth(0).inner_text(), CORPUS, "playground answer", markdown=True)
    assert_shown(answers.nth(1).inner_text(), CORPUS, "playground error", markdown=False)


def test_the_dataset_card_is_a_download_never_a_page(page, live_server, hostile):
    log_in(page, live_server, "lead")
    response = page.request.get(
        f"{live_server.url}/api/projects/{hostile.pk}/export/?format=card&card_format=trl"
    )
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/markdown")
    assert response.headers["content-disposition"].startswith("attachment")
    assert response.headers["x-content-type-options"] == "nosniff"
    card = response.text()
    assert f"# {NAME}" in card and LICENSE in card and ALL_TEXT in card
