"""The Playground page: a lead asks two versions through a running `serve_model`."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from annotate.models import Membership, Project
from tests.factories import MembershipFactory, UserFactory
from training import services
from training.serving import make_server

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


@pytest.fixture
def serve_port(transactional_db: Any, settings: Any) -> Iterator[int]:
    server = make_server("127.0.0.1", 0)
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
    assert "<header>v1</header>" in results and "<header>base</header>" in results
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
