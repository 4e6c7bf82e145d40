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

import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class Handler(BaseHTTPRequestHandler):
    server_version = "prefloop-serve/1"
    protocol_version = "HTTP/1.1"
    service: ChatService  # set on the subclass made by make_server
    api_key: str | None = None

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

    def _authorised(self) -> bool:
        if not self.api_key:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {self.api_key}"

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        try:
            if not self._authorised():
                raise ApiError(HTTPStatus.UNAUTHORIZED, "bad or missing API key")
            if self.path.rstrip("/") == "/v1/models":
                self._send_json(200, self.service.models())
            elif self.path.rstrip("/") in ("", "/health"):
                self._send_json(200, {"status": "ok"})
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no route {self.path}")
        except ApiError as exc:
            self._error(exc)
        finally:
            connection.close()

    def do_POST(self) -> None:  # noqa: N802
        try:
            if not self._authorised():
                raise ApiError(HTTPStatus.UNAUTHORIZED, "bad or missing API key")
            if self.path.rstrip("/") != "/v1/chat/completions":
                raise ApiError(HTTPStatus.NOT_FOUND, f"no route {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None
            if not isinstance(body, dict):
                raise ApiError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            if body.get("stream"):
                self._stream(self.service.stream(body))
            else:
                self._send_json(200, self.service.complete(body))
        except ApiError as exc:
            self._error(exc)
        except Exception:
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
        except (BrokenPipeError, ConnectionResetError):
            # the client went away: closing the generator stops sampling and frees the model
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
                if version.pk not in registry.loaded_ids():
                    registry.get(version)
        except Exception:
            log.exception("preloading a promoted version failed")
        finally:
            connection.close()


def make_server(
    host: str = "127.0.0.1", port: int = 8001, *, api_key: str | None = None
) -> ThreadingHTTPServer:
    service = ChatService()
    handler = type("BoundHandler", (Handler,), {"service": service, "api_key": api_key})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
