"""Streamed answers from `serve_model`, read as raw server-sent events."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from annotate.models import Project
from training.serving import make_server

pytestmark = pytest.mark.slow


@pytest.fixture
def port(transactional_db: Any) -> Iterator[int]:
    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(transactional_db: Any, tiny_model_dir: Any, var_dir: Any) -> Project:
    from .conftest import make_loop_project

    return make_loop_project(tiny_model_dir)


def _post(port: int, body: dict[str, Any]) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    return conn.getresponse()


def _events(response: http.client.HTTPResponse) -> Iterator[Any]:
    """Each event's data as it arrives, read line by line off the socket."""
    for raw in response:
        line = raw.decode().rstrip("\n")
        if not line:
            continue
        assert line.startswith("data: ")
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            yield data
            return
        yield json.loads(data)


def _body(project: Project, **extra: Any) -> dict[str, Any]:
    return {
        "model": project.slug,
        "messages": [{"role": "user", "content": "hello world"}],
        "max_tokens": 16,
        "temperature": 1.0,
        "seed": 11,
        **extra,
    }


def test_it_streams_token_by_token_the_text_it_answers_unstreamed(
    port: int, project: Project
) -> None:
    response = _post(port, _body(project, stream=True))
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    events = list(_events(response))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    finish = [i for i, c in enumerate(chunks) if c["choices"][0]["finish_reason"]]
    assert finish == [len(chunks) - 1]
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(content) > 1 and all(content)

    plain = _post(port, _body(project))
    answer = json.loads(plain.read())
    assert "".join(content) == answer["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == answer["choices"][0]["finish_reason"]
    assert chunks[-1]["model"] == answer["model"]


def test_it_streams_n_choices_interleaved_by_index(port: int, project: Project) -> None:
    response = _post(port, _body(project, n=3, stream=True, stream_options={"include_usage": True}))
    events = list(_events(response))
    assert events[-1] == "[DONE]"
    *chunks, usage = events[:-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 3
    texts = {0: "", 1: "", 2: ""}
    order: list[int] = []
    finished: dict[int, str] = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        index = choice["index"]
        assert index not in finished, "text after the choice finished"
        if choice["finish_reason"]:
            finished[index] = choice["finish_reason"]
        elif "content" in choice["delta"]:
            texts[index] += choice["delta"]["content"]
            order.append(index)
    assert set(finished) == {0, 1, 2}
    assert order != sorted(order)  # the choices grow together, not one after another

    answer = json.loads(_post(port, _body(project, n=3)).read())
    assert [c["message"]["content"] for c in answer["choices"]] == [texts[i] for i in range(3)]
    assert [c["finish_reason"] for c in answer["choices"]] == [finished[i] for i in range(3)]
    assert answer["usage"] == usage["usage"]


def test_it_refuses_a_bad_streamed_request_before_streaming(port: int, project: Project) -> None:
    response = _post(port, _body(project, stream=True, temperature=9))
    assert response.status == 400
    assert json.loads(response.read())["error"]["param"] == "temperature"
