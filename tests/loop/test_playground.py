"""The Playground page: a lead asks two versions through a running `serve_model`."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from annotate.models import Membership, Project
from tests.factories import MembershipFactory, UserFactory
from training import services
from training.models import ModelVersion
from training.serving import make_server
from training.serving_client import ask_model_server
from training.serving_key import serve_api_key

from .conftest import make_loop_project, save_loop_model
from .test_rounds import _run_round


@pytest.fixture(scope="module")
def markup_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, with every ordinary word spelled as HTML, so any answer holds markup."""
    directory = save_loop_model(tmp_path_factory.mktemp("models") / "markup")
    path = directory / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = {
        (token if token.startswith("<") else f"<b>{token}</b>"): i for token, i in vocab.items()
    }
    path.write_text(json.dumps(tokenizer))
    return directory


@pytest.fixture(scope="module")
def markdown_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every ordinary word spelled in bold Markdown."""
    directory = save_loop_model(tmp_path_factory.mktemp("models") / "markdown")
    path = directory / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = {
        (token if token.startswith("<") else f"**{token}**"): i for token, i in vocab.items()
    }
    path.write_text(json.dumps(tokenizer))
    return directory


@pytest.fixture
def serve_port(transactional_db: Any, settings: Any, var_dir: Path) -> Iterator[int]:
    """`serve_model` as it starts by default: asking for the key in the var directory."""
    server = make_server("127.0.0.1", 0, api_key=serve_api_key())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.PREFLOOP_SERVE_PORT = server.server_address[1]
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(serve_port: int, markup_model_dir: Path, var_dir: Path) -> Project:
    return make_loop_project(markup_model_dir)


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _url(project: Project) -> str:
    return f"/projects/{project.pk}/playground/"


def _lead(project: Project) -> Any:
    return project.memberships.get(role=Membership.Role.LEAD).user


@pytest.mark.slow
def test_it_answers_a_prompt_from_two_versions(project: Project, serve_port: int) -> None:
    _run_round(project)
    assert services.serving_version(project).number == 1
    client = _client(_lead(project))

    page = client.get(_url(project))
    assert page.status_code == 200
    assert f"port {serve_port}" in page.content.decode()

    response = client.post(
        _url(project),
        {"prompt": "hello <i>world</i>", "left": "1", "right": "0", "max_tokens": "6"},
    )
    assert response.status_code == 200
    body = response.content.decode()
    results = body[body.index('id="playground-results"') :]
    assert results.count('class="completion"') == 2
    headers = re.findall(r"<header>(\w+)", results)
    assert headers == ["v1", "base"]
    assert 'class="error"' not in results
    # the answers are made of <b>word</b> tokens, and come out as text, not markup
    assert "&lt;b&gt;" in results and "<b>" not in results
    assert "hello &lt;i&gt;world&lt;/i&gt;</textarea>" in body


def test_it_says_so_when_a_version_is_not_the_projects(project: Project) -> None:
    response = _client(_lead(project)).post(
        _url(project), {"prompt": "hello", "left": "0", "right": "7"}, follow=True
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Pick two versions of this project." in body
    assert 'id="playground-results"' not in body


def test_it_keeps_the_playground_from_annotators_and_outsiders(project: Project) -> None:
    annotator = UserFactory(username="ann")
    MembershipFactory(project=project, user=annotator)
    outsider = UserFactory(username="out")
    form = {"prompt": "hello", "left": "0", "right": "0"}
    for method in ("get", "post"):
        assert getattr(_client(annotator), method)(_url(project), form).status_code == 403
        assert getattr(_client(outsider), method)(_url(project), form).status_code == 404
    assert Client().get(_url(project)).status_code == 302


def _results(body: str) -> list[str]:
    """Each answer's box on the page."""
    results = body[body.index('id="playground-results"') :]
    return results.split('class="completion"')[1:]


@pytest.mark.slow
def test_it_marks_answers_the_token_limit_cut_off(project: Project, serve_port: int) -> None:
    client = _client(_lead(project))
    seen = set()
    for max_tokens in (1, 200):
        response = client.post(
            _url(project), {"prompt": "hello", "left": "0", "right": "0", "max_tokens": max_tokens}
        )
        # the server says which answers it cut off; the page marks exactly those
        expected = ask_model_server(f"{project.slug}:v0", "hello", max_tokens)
        assert expected["error"] is None
        seen.add(expected["finished"])
        for box in _results(response.content.decode()):
            marked = "Cut off: the answer stops at max tokens" in box
            assert marked == (expected["finished"] is False), (max_tokens, box)
            assert ("(cut off here)" in box) == marked
    assert seen == {True, False}


@pytest.mark.slow
def test_it_renders_answers_as_markdown_with_html_escaped(
    serve_port: int, markdown_model_dir: Path, var_dir: Path
) -> None:
    project = make_loop_project(markdown_model_dir)
    response = _client(_lead(project)).post(
        _url(project), {"prompt": "hello", "left": "0", "right": "0", "max_tokens": "8"}
    )
    (left, right) = _results(response.content.decode())
    assert '<div class="md">' in left
    assert "<strong>" in left and "**" not in left.split('<div class="md">')[1]


def test_it_keeps_its_settings_across_requests(project: Project, serve_port: int) -> None:
    client = _client(_lead(project))
    base = services.base_version(project)
    ModelVersion.objects.create(
        project=project, number=1, spec=base.spec, parent=base, state=ModelVersion.State.REJECTED
    )
    page = client.get(_url(project)).content.decode()
    assert 'name="max_tokens" value="128"' in page
    client.post(_url(project), {"prompt": "   ", "left": "1", "right": "0", "max_tokens": "6"})
    # a later visit still has them, and says that v1 was rejected by the gate
    page = client.get(_url(project)).content.decode()
    assert 'name="max_tokens" value="6"' in page
    left = page[page.index('name="left"') : page.index('name="right"')]
    right = page[page.index('name="right"') : page.index('name="max_tokens"')]
    assert '<option value="1" selected>v1 (rejected by the gate)</option>' in left
    assert '<option value="0" selected>base (serving)</option>' in right
    # out-of-range numbers are brought into range, not refused
    page = client.post(
        _url(project), {"prompt": "", "left": "0", "right": "0", "max_tokens": "99999"}
    ).content.decode()
    assert 'name="max_tokens" value="1024"' in page and "Write a prompt to send." in page


@pytest.mark.slow
def test_it_marks_a_rejected_version_in_its_answer(project: Project, serve_port: int) -> None:
    base = services.base_version(project)
    ModelVersion.objects.create(
        project=project, number=1, spec=base.spec, parent=base, state=ModelVersion.State.REJECTED
    )
    response = _client(_lead(project)).post(
        _url(project), {"prompt": "hello", "left": "1", "right": "0", "max_tokens": "4"}
    )
    rejected, served = _results(response.content.decode())
    assert "rejected by the gate" in rejected and "rejected by the gate" not in served


def test_it_asks_with_the_key_serve_model_requires(
    project: Project, serve_port: int, settings: Any
) -> None:
    assert ask_model_server(f"{project.slug}:v0", "hello", 2)["error"] is None
    # a web process given another key than the server's says what to do about it
    settings.PREFLOOP_SERVE_API_KEY = "not-the-servers-key"
    reply = ask_model_server(f"{project.slug}:v0", "hello", 2)
    assert reply["error"] is not None and reply["error"].startswith("401: ")
    assert "PREFLOOP_SERVE_API_KEY" in reply["error"]
