"""The lead's datasets page and Playground in a real browser, at desktop and phone width."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from annotate.models import DatasetJob, Prompt
from tests.loop.conftest import make_loop_project, save_loop_model
from training import services
from training.models import ModelVersion
from training.serving import ChatService, make_server

from ..factories import ComparisonFactory
from .test_annotating import log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}
BAD_LINES = '{"prompt": "kept"}\n{"text": "no prompt <script>alert(1)</script>"}'


def sideways_overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(
        page.evaluate(
            "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - window.innerWidth"
        )
    )


def test_a_failed_paste_keeps_the_lines_and_shows_the_error_beside_the_box(page, live_server, team):
    log_in(page, live_server, "lead")
    page.goto(f"{live_server.url}/projects/{team.project.pk}/datasets/")
    box = page.locator("#paste-text")
    assert box.get_attribute("placeholder").startswith('{"prompt": "What is DPO?"}')
    # the example follows the kind of lines chosen
    page.select_option("#paste-kind", "pairs")
    assert "completion_a" in box.get_attribute("placeholder")
    page.select_option("#paste-kind", "prompts")
    assert "completion_a" not in box.get_attribute("placeholder")

    box.fill(BAD_LINES)
    page.click("#paste button[type=submit]")
    page.wait_for_selector("#paste-error")
    assert page.locator("#paste-text").input_value() == BAD_LINES
    error = page.locator("#paste-error")
    assert "Nothing was imported: line 2" in error.inner_text()
    # beside the box: right under it, in view, not only at the top of the page
    box_bottom = page.locator("#paste-text").bounding_box()
    error_top = error.bounding_box()
    assert 0 <= error_top["y"] - (box_bottom["y"] + box_bottom["height"]) < 40
    # and in view: the page comes back scrolled to the box
    assert 0 <= error_top["y"] < page.viewport_size["height"]
    assert not page.js_dialogs
    # the console only notes the 400 status of the page that carries the error
    assert all("status of 400" in e for e in page.js_errors)
    assert Prompt.objects.filter(project=team.project).count() == 0

    # fixed, the same lines import and the page says so
    page.fill("#paste-text", '{"prompt": "kept"}\n{"prompt": "also"}')
    page.click("#paste button[type=submit]")
    page.wait_for_selector(".msg.success")
    assert "2 prompts added" in page.locator(".msg.success").inner_text()
    assert Prompt.objects.filter(project=team.project).count() == 2


def test_the_datasets_page_fits_a_phone(page, live_server, team):
    for n in range(3):
        DatasetJob.objects.create(
            project=team.project,
            kind=DatasetJob.Kind.EXPORT,
            format="trl-plain",
            status=DatasetJob.Status.DONE,
            filename=f"a-rather-long-export-file-name-{n}.jsonl",
        )
    ComparisonFactory(project=team.project)
    log_in(page, live_server, "lead")
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/projects/{team.project.pk}/datasets/")
    assert sideways_overflow(page) <= 0
    # a failed paste and an empty export keep it within the screen too
    page.fill("#paste-text", "x" * 400)
    page.click("#paste button[type=submit]")
    page.wait_for_selector("#paste-error")
    assert sideways_overflow(page) <= 0
    page.click("#export button[value=download]")
    page.wait_for_selector("#export-empty")
    assert "no pair of this project has been judged" in page.locator("#export-empty").inner_text()
    assert sideways_overflow(page) <= 0
    # the jobs table scrolls inside its card
    table = page.locator("#jobs .table-scroll")
    assert table.evaluate("el => el.getBoundingClientRect().right") <= PHONE["width"]


@pytest.fixture(scope="module")
def loop_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_loop_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def held_answers(monkeypatch: Any) -> threading.Event:
    """Set it to let `serve_model` answer: until then a page can be seen waiting for it."""
    release = threading.Event()
    release.set()
    complete = ChatService.complete

    def when_released(self: ChatService, body: dict[str, Any]) -> dict[str, Any]:
        release.wait(30)
        return complete(self, body)

    monkeypatch.setattr(ChatService, "complete", when_released)
    return release


@pytest.fixture
def slow_server(
    transactional_db: Any, settings: Any, held_answers: threading.Event
) -> Iterator[int]:
    """`serve_model` with the tiny model, answering once ``held_answers`` is set."""
    server = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PREFLOOP_SERVE_PORT = server.server_address[1]
    yield server.server_address[1]
    held_answers.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def loop_project(slow_server: int, loop_model_dir: Path, tmp_path: Path, settings: Any) -> Any:
    settings.VAR_DIR = tmp_path
    project = make_loop_project(loop_model_dir)
    base = services.base_version(project)
    ModelVersion.objects.create(
        project=project, number=1, spec=base.spec, parent=base, state=ModelVersion.State.REJECTED
    )
    return project


def _ask(page: Any, max_tokens: str) -> None:
    page.fill("#prompt", "hello **world**")
    page.select_option("select[name=left]", "1")
    page.select_option("select[name=right]", "0")
    page.fill("input[name=max_tokens]", max_tokens)
    page.click("#playground-send", no_wait_after=True)


def test_the_playground_shows_a_spinner_and_keeps_its_settings(
    page, live_server, loop_project, held_answers
):
    log_in(page, live_server, "loop-lead")
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/playground/")
    assert page.locator("#playground-spinner").is_hidden()
    options = page.locator("select[name=left] option").all_inner_texts()
    assert "v1 (rejected by the gate)" in options and "base (serving)" in options

    # what the page shows just after the form is sent, reported from inside the page (a
    # script run from the test could wait for the navigation under way)
    page.evaluate(
        """() => document.getElementById("playground-form").addEventListener("submit", () =>
          setTimeout(() => {
            const spinner = document.getElementById("playground-spinner");
            console.log("busy " + JSON.stringify({
              shown: !spinner.hidden && spinner.getBoundingClientRect().height > 0,
              text: spinner.innerText,
              disabled: document.getElementById("playground-send").disabled,
            }));
          }, 50))"""
    )
    held_answers.clear()
    with page.expect_console_message(lambda m: m.text.startswith("busy ")) as message:
        _ask(page, "5")
    busy = json.loads(message.value.text.removeprefix("busy "))
    # while the versions answer, the page says it is working
    assert busy["shown"] and "Generating" in busy["text"] and busy["disabled"]
    held_answers.set()
    page.wait_for_selector("#playground-results", timeout=60_000)
    assert page.locator("#playground-spinner").is_hidden()
    assert page.locator("#playground-send").is_enabled()
    # the settings sent are still there for the next question
    assert page.locator("input[name=max_tokens]").input_value() == "5"
    assert page.locator("select[name=left]").input_value() == "1"
    assert page.locator("#prompt").input_value() == "hello **world**"
    boxes = page.locator("#playground-results .completion")
    assert boxes.count() == 2
    assert "rejected by the gate" in boxes.nth(0).locator("header").inner_text()
    assert not page.js_errors


def test_the_playground_fits_a_phone(page, live_server, loop_project):
    log_in(page, live_server, "loop-lead")
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/projects/{loop_project.pk}/playground/")
    assert sideways_overflow(page) <= 0
    _ask(page, "60")
    page.wait_for_selector("#playground-results", timeout=60_000)
    assert sideways_overflow(page) <= 0
    # the answers stack, one under the other
    first, second = (
        page.locator("#playground-results .completion").nth(i).bounding_box() for i in (0, 1)
    )
    assert second["y"] >= first["y"] + first["height"]
    assert first["x"] + first["width"] <= PHONE["width"]
