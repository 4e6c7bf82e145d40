"""`serve_model` against hostile and odd requests: a key by default, JSON only, bounded bodies,
no server paths in answers, and the base it serves following the project's base_model."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Membership, Project
from tests.conftest import api_for
from tests.loop.conftest import VOCAB, make_loop_project, save_loop_model
from training import services, serving
from training.core.tiny import save_tiny, tiny_llama, word_tokenizer
from training.models import ModelVersion
from training.serving import make_server
from training.serving_key import serve_api_key

KEY = "the-key"
MAX_BODY = 4096
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(transactional_db: Any) -> Iterator[Any]:
    server = make_server("127.0.0.1", 0, api_key=KEY, max_body_bytes=MAX_BODY)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def port(server: Any) -> int:
    return int(server.server_address[1])


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_loop_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def var_dir(tmp_path: Path, settings: Any) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def _exchange(port: int, head: str, body: bytes = b"", *, half_close: bool = False) -> Any:
    """Send a raw request and read until the server closes the connection.

    Returns (status, headers, body). A server that waits for more instead of answering
    makes this fail on the socket's timeout rather than hang the test.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    raw_head, _, answer = received.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, answer


def _post(port: int, body: bytes, **headers: str) -> Any:
    fields = {"Host": "x", "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    head = "POST /v1/chat/completions HTTP/1.1\n"
    head += "".join(f"{name}: {value}\n" for name, value in fields.items() if value is not None)
    return _exchange(port, head, body)


def _refused(answer: Any, status: int) -> dict[str, Any]:
    """The OpenAI-shaped error of a refusal, checked to close the connection and say so."""
    got, headers, body = answer
    assert got == status, body
    assert headers["Connection"] == "close"
    assert headers["Content-Type"] == "application/json"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    return error


ASK = json.dumps({"model": "no-such-project", "messages": [{"role": "user", "content": "hi"}]})


def test_it_checks_the_key_in_constant_time(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    compare = serving.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(serving.hmac, "compare_digest", spy)
    body = ASK.encode()
    for given in (None, "Bearer wrong", f"Bearer {KEY}x", KEY, "Bearer \xe9"):
        error = _refused(_post(port, body, Authorization=given, Content_Length=str(len(body))), 401)
        assert error["message"] == "bad or missing API key"
    assert (b"Bearer wrong", f"Bearer {KEY}".encode()) in compared
    # with the key, the request goes on to the model it names
    _refused(_post(port, body, Content_Length=str(len(body))), 404)


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_it_reads_only_json_bodies(port: int, content_type: str | None) -> None:
    # a page on any site can post these three without a CORS preflight
    body = ASK.encode()
    answer = _post(port, body, Content_Type=content_type, Content_Length=str(len(body)))
    assert "application/json" in _refused(answer, 415)["message"]


def test_it_takes_json_with_a_charset(port: int) -> None:
    body = ASK.encode()
    answer = _post(
        port, body, Content_Type="Application/JSON; charset=utf-8", Content_Length=str(len(body))
    )
    assert _refused(answer, 404)["param"] == "model"


def test_it_answers_a_preflight_without_allowing_any_origin(port: int) -> None:
    status, headers, body = _exchange(
        port,
        "OPTIONS /v1/chat/completions HTTP/1.1\nHost: x\nOrigin: https://elsewhere.example\n"
        "Access-Control-Request-Method: POST\nAccess-Control-Request-Headers: content-type\n",
    )
    assert status == 501
    assert headers["Connection"] == "close"
    assert not any(name.lower().startswith("access-control-") for name in headers)
    assert "OPTIONS" in json.loads(body)["error"]["message"]


@pytest.mark.parametrize(
    ("length", "status"),
    [
        (None, 411),  # no length: refused rather than read to the end of the connection
        ("-1", 400),  # used to read until the client went away, holding a thread
        ("abc", 400),
        ("1e3", 400),
        ("99999999999999999999999", 400),
        (str(MAX_BODY + 1), 413),  # refused before a byte of it is read
    ],
)
def test_it_refuses_a_bad_content_length_at_once(
    port: int, length: str | None, status: int
) -> None:
    _refused(_post(port, b"", Content_Length=length), status)


def test_it_refuses_chunked_and_doubled_lengths(port: int) -> None:
    _refused(_post(port, b"2\r\n{}\r\n0\r\n\r\n", Transfer_Encoding="chunked"), 411)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer {KEY}\n"
        "Content-Type: application/json\nContent-Length: 2\nContent-Length: 20\n"
    )
    _refused(_exchange(port, head, b"{}"), 400)


def test_it_refuses_a_body_shorter_than_its_length(port: int) -> None:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\nHost: x\nAuthorization: Bearer {KEY}\n"
        "Content-Type: application/json\nContent-Length: 100\n"
    )
    _refused(_exchange(port, head, b"{}", half_close=True), 400)


@pytest.mark.parametrize("body", [b"[" * 4000, b"{", b"\xff\xfe", b"[1, 2]"])
def test_it_refuses_bodies_that_are_not_a_json_object(port: int, body: bytes) -> None:
    error = _refused(_post(port, body, Content_Length=str(len(body))), 400)
    assert "Traceback" not in error["message"]


def test_it_serves_kept_alive_connections_between_refusals(port: int) -> None:
    head = f"GET /v1/models HTTP/1.1\nHost: x\nAuthorization: Bearer {KEY}\n"
    request = (head.replace("\n", "\r\n") + "\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request + request)  # two requests down one connection
        time.sleep(0.5)
        received = sock.recv(65536)
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert b"Connection: close" not in received


def _tiny(directory: Path, seed: int) -> Path:
    tokenizer = word_tokenizer(VOCAB)
    return save_tiny(tiny_llama(tokenizer, seed=seed), tokenizer, directory)


def _ask(port: int, model: str) -> dict[str, Any]:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "hello world"}],
            "max_tokens": 4,
            "seed": 3,
            "logprobs": True,
        }
    ).encode()
    status, _, answer = _post(port, body, Content_Length=str(len(body)), Connection="close")
    data: dict[str, Any] = json.loads(answer)
    assert status == 200, data
    return data


@pytest.mark.slow
def test_it_shows_no_server_path_in_its_answers(
    port: int, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = make_loop_project(tiny_model_dir)
    answer = _ask(port, project.slug)
    assert re.fullmatch(r"base-[0-9a-f]{12}", answer["system_fingerprint"])
    assert str(tiny_model_dir) not in json.dumps(answer)
    # weights that cannot be loaded: the answer says so, without where they were looked for
    hidden = tiny_model_dir.parent / "secret-place"
    base = services.base_version(project)
    ModelVersion.objects.create(project=project, number=1, spec=str(hidden), parent=base)
    body = json.dumps(
        {"model": f"{project.slug}:v1", "messages": [{"role": "user", "content": "a"}]}
    )
    status, _, data = _post(port, body.encode(), Content_Length=str(len(body)))
    assert status == 500
    assert "secret-place" not in data.decode() and "Traceback" not in data.decode()


@pytest.mark.slow
def test_it_serves_the_new_base_once_base_model_changes(
    server: Any, port: int, tiny_model_dir: Path, var_dir: Path, tmp_path: Path
) -> None:
    project: Project = make_loop_project(tiny_model_dir)
    before = _ask(port, project.slug)
    other = _tiny(tmp_path.parent / f"{tmp_path.name}-other-base", seed=7)
    lead = project.memberships.get(role=Membership.Role.LEAD).user
    patched = api_for(lead).patch(
        f"/api/projects/{project.pk}/", {"base_model": str(other)}, format="json"
    )
    assert patched.status_code == 200, patched.content
    after = _ask(port, project.slug)
    assert after["model"] == before["model"] == f"{project.slug}:base"
    assert after["system_fingerprint"] != before["system_fingerprint"]
    first = [
        c["logprobs"]["content"][0]["logprob"] for c in (before["choices"][0], after["choices"][0])
    ]
    assert first[0] != first[1]  # other weights answered
    assert _ask(port, f"{project.slug}:base")["system_fingerprint"] == after["system_fingerprint"]


def test_serve_model_refuses_to_go_keyless_off_the_loopback() -> None:
    with pytest.raises(CommandError, match="loopback"):
        call_command("serve_model", "--no-api-key", "--host", "0.0.0.0")  # noqa: S104
    with pytest.raises(CommandError, match="pick one"):
        call_command("serve_model", "--no-api-key", "--api-key", "k")


@pytest.mark.slow
def test_serve_model_requires_a_key_it_generates_by_default(tmp_path: Path, settings: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "PREFLOOP_SERVE_API_KEY"}
    env.update(PREFLOOP_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="annotate.settings")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve_model", "--port", str(port), "--no-preload"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        health = "GET /health HTTP/1.1\nHost: x\nConnection: close\n"
        deadline = time.monotonic() + 120
        while True:
            try:
                status = _exchange(port, health)[0]
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail(f"serve_model did not start:\n{log.read_text()}")
                time.sleep(0.3)
        assert status == 401
        path = tmp_path / "serve_api_key"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        key = path.read_text().strip()
        assert len(key) >= 32
        assert _exchange(port, health + f"Authorization: Bearer {key}\n")[0] == 200
        output = log.read_text()
        assert str(path) in output and key not in output
        # the web process on the machine (the Playground) reads the same key
        settings.VAR_DIR = tmp_path
        settings.PREFLOOP_SERVE_API_KEY = ""
        assert serve_api_key() == key
    finally:
        process.terminate()
        process.wait(timeout=30)
