"""An OpenAI-compatible chat completions server for each project's versions.

``POST /v1/chat/completions`` with ``model`` set to ``"<project-slug>"`` answers with the
project's serving version, ``"<project-slug>:v3"`` with version 3 (``:base`` with the base;
``:v0`` is accepted as another name of it). ``n`` asks for several choices, and
``"logprobs": true`` adds each choice's sampled tokens with their log-probabilities under the
untempered policy, in OpenAI's ``logprobs.content`` shape (not when streaming). Versions are
named as on the loop page and in the API and exports: answers and ``GET /v1/models`` (what can
be asked for) say ``:base``, ``:v1``, ... With ``"stream": true`` the answer comes as
server-sent events, token by token (all ``n`` choices at once, interleaved by ``index``).
Run it with ``manage.py serve_model``.

Each request looks up the version it needs when it starts and holds on to that loaded model until
it has answered, so promoting a version switches new requests over without cutting off any in
flight. A watcher thread loads a newly promoted version before the first request asks for it.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from .models import ModelVersion
from .serving_chat import MAX_TOKENS_LIMIT, ChatRequest, ChatService
from .serving_registry import ApiError, Loaded, Registry

__all__ = [
    "MAX_TOKENS_LIMIT",
    "ApiError",
    "ChatRequest",
    "ChatService",
    "Handler",
    "Loaded",
    "Registry",
    "make_server",
    "watch_promotions",
]
log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]{1,18}")


class Handler(BaseHTTPRequestHandler):
    """The HTTP side: the key, the routes, and request bodies bounded before they are read.

    Only ``application/json`` bodies are read, so a browser page cannot post to it without a
    CORS preflight, which it answers with no CORS headers; a body must declare its size, at
    most ``max_body_bytes``. Every refusal ends the connection and says so.
    """

    server_version = "prefloop-serve/1"
    protocol_version = "HTTP/1.1"
    service: ChatService  # set on the subclass made by make_server
    api_key: str | None = None
    max_body_bytes = 1_000_000
    # seconds a client may keep the server waiting on the socket (an idle kept-alive
    # connection, a body that trickles in, a stream nobody reads) before it is dropped
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, data: Any, *, close: bool = False) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            # said in the response, so that no client sends its next request down a
            # connection this server is closing (sending the header also sets close_connection)
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, error: ApiError) -> None:
        kind = "invalid_request_error" if error.status < 500 else "server_error"
        # a refused request's body may be unread: it must not be taken for the next request,
        # so the connection ends with this answer
        self._send_json(
            error.status,
            {"error": {"message": error.message, "type": kind, "param": error.param, "code": None}},
            close=True,
        )

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, a method it does not serve,
        an OPTIONS preflight among them) in the same JSON shape as the others."""
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._error(ApiError(status, message or status.phrase))

    def _authorised(self) -> bool:
        if not self.api_key:
            return True
        given = self.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        # constant time: how long a wrong key takes to refuse says nothing of the right one
        return hmac.compare_digest(given, f"Bearer {self.api_key}".encode())

    def _json_body(self) -> dict[str, Any]:
        """The request's JSON object, read only once its declared size is known and allowed."""
        content_type = self.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise ApiError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"
            )
        if "Transfer-Encoding" in self.headers:
            raise ApiError(
                HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length, not chunked"
            )
        lengths = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if not lengths:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        raw = lengths.pop()
        if lengths or not _DIGITS.fullmatch(raw):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "Content-Length must be one non-negative integer"
            )
        length = int(raw)
        if length > self.max_body_bytes:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body is over {self.max_body_bytes} bytes",
            )
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
        if len(data) < length:
            raise ApiError(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as exc:
            detail = f": {exc}" if isinstance(exc, json.JSONDecodeError) else ""
            raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not JSON{detail}") from None
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        try:
            if not self._authorised():
                raise ApiError(HTTPStatus.UNAUTHORIZED, "bad or missing API key")
            route = self.path.split("?", 1)[0].rstrip("/")
            if route == "/v1/models":
                data = self.service.models()
            elif route in ("", "/health"):
                data = {"status": "ok"}
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, "no such route: GET /v1/models or /health")
            # a GET that came with a body leaves it unread: the connection cannot go on
            self._send_json(200, data, close=self._declares_body())
        except ApiError as exc:
            self._error(exc)
        finally:
            connection.close()

    def _declares_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return "Transfer-Encoding" in self.headers or length not in ("", "0")

    def do_POST(self) -> None:  # noqa: N802
        try:
            if not self._authorised():
                raise ApiError(HTTPStatus.UNAUTHORIZED, "bad or missing API key")
            if self.path.split("?", 1)[0].rstrip("/") != "/v1/chat/completions":
                raise ApiError(HTTPStatus.NOT_FOUND, "no such route: POST /v1/chat/completions")
            body = self._json_body()
            if body.get("stream"):
                self._stream(self.service.stream(body))
            else:
                self._send_json(200, self.service.complete(body))
        except ApiError as exc:
            self._error(exc)
        except Exception:
            # logged here in full; the client learns no more than that it failed (no paths)
            log.exception("chat completion failed")
            self._error(ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "generation failed"))
        finally:
            connection.close()

    def _stream(self, chunks: Iterator[dict[str, Any]]) -> None:
        """Server-sent events, one per chunk, each flushed as soon as it is made."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk in chunks:
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            # the client went away or stopped reading: closing the generator stops sampling
            # and frees the model
            log.info("stream closed by the client")
            return
        except Exception:
            # the status line is sent; the error goes out as an event, as OpenAI does
            log.exception("streamed chat completion failed")
            error = {"error": {"message": "generation failed", "type": "server_error"}}
            self.wfile.write(f"data: {json.dumps(error)}\n\n".encode())
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def watch_promotions(registry: Registry, stop: threading.Event, interval: float = 2.0) -> None:
    """Load each project's serving version as soon as it is promoted."""
    while not stop.wait(interval):
        try:
            close_old_connections()
            serving = ModelVersion.objects.filter(state=ModelVersion.State.SERVING)
            for version in serving.select_related("project"):
                if not registry.holds(version):
                    registry.get(version)
        except Exception:
            log.exception("preloading a promoted version failed")
        finally:
            connection.close()


def make_server(
    host: str = "127.0.0.1",
    port: int = 8001,
    *,
    api_key: str | None = None,
    max_body_bytes: int | None = None,
) -> ThreadingHTTPServer:
    """The server, not yet serving. With ``api_key`` None it answers anyone: tests, and
    ``serve_model --no-api-key`` on the loopback; ``serve_model`` passes its key by default
    (see ``training.serving_key``). ``max_body_bytes``: $PREFLOOP_SERVE_MAX_BODY_BYTES."""
    service = ChatService()
    attributes = {
        "service": service,
        "api_key": api_key,
        "max_body_bytes": max_body_bytes or settings.PREFLOOP_SERVE_MAX_BODY_BYTES,
    }
    handler = type("BoundHandler", (Handler,), attributes)
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
