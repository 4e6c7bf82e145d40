"""The OpenAI-compatible endpoint, driven by the official openai client."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from annotate.models import Project
from training import services
from training.serving import make_server

from .test_rounds import _run_round


@pytest.fixture
def port(transactional_db: Any) -> Iterator[int]:
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def served_project(transactional_db: Any, tiny_model_dir: Any, var_dir: Any) -> Project:
    from .conftest import make_loop_project

    return make_loop_project(tiny_model_dir)


def _ask(client: openai.OpenAI, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello world"}],
        max_tokens=4,
        seed=1,
        **kwargs,
    )


@pytest.mark.slow
def test_it_answers_with_the_serving_version_and_switches_after_promotion(
    client: openai.OpenAI, served_project: Project
) -> None:
    slug = served_project.slug
    first = _ask(client, slug)
    assert first.model == f"{slug}:base"
    assert first.choices[0].message.role == "assistant"
    assert first.usage is not None and first.usage.completion_tokens >= 1

    _run_round(served_project)
    assert services.serving_version(served_project).number == 1
    second = _ask(client, slug)
    assert second.model == f"{slug}:v1"
    # an explicit version still answers after it stopped serving
    assert _ask(client, f"{slug}:v0").model == f"{slug}:base"  # v0: another name of the base
    services.promote(services.base_version(served_project))
    assert _ask(client, slug).model == f"{slug}:base"
    assert {m.id for m in client.models.list()} >= {slug, f"{slug}:base", f"{slug}:v1"}
    assert f"{slug}:v0" not in {m.id for m in client.models.list()}


@pytest.mark.slow
def test_it_streams_a_completion(client: openai.OpenAI, served_project: Project) -> None:
    stream = _ask(client, served_project.slug, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert isinstance(text, str)


def test_it_rejects_unknown_models_with_an_openai_error(
    client: openai.OpenAI, served_project: Project
) -> None:
    with pytest.raises(openai.NotFoundError):
        _ask(client, "no-such-project")
    with pytest.raises(openai.NotFoundError):
        _ask(client, f"{served_project.slug}:v9")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=served_project.slug, messages=[])


def test_it_says_so_when_it_closes_the_connection_after_an_error(port: int) -> None:
    body = json.dumps({"model": "no-such-project", "messages": [{"role": "user", "content": "hi"}]})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        received = b""
        while chunk := sock.recv(65536):  # returns b"" once the server has closed it
            received += chunk
    head, _, answer = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404")
    assert b"\r\nConnection: close" in head
    assert json.loads(answer)["error"]["param"] == "model"


def test_errors_in_a_row_never_break_a_kept_alive_connection(client: openai.OpenAI) -> None:
    # Without "Connection: close" the client reuses the connection the server is closing, and
    # one of these fails with "Server disconnected without sending a response".
    for _ in range(40):
        with pytest.raises(openai.NotFoundError):
            _ask(client, "no-such-project")
