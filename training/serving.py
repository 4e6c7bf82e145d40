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
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.db import close_old_connections, connection

from annotate.models import Project

from .core.loading import load_model
from .models import ModelVersion
from .services import base_version, serving_version

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^(?P<slug>[-\w]+)(?::(?:v(?P<number>\d+)|(?P<base>base)))?$")
# Longest completion one request may ask for.
MAX_TOKENS_LIMIT = 2048


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass
class Loaded:
    """A loaded model; the lock keeps one generation at a time per model."""

    version_id: int
    spec: str
    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)


class Registry:
    """Loaded models by version, least recently used dropped beyond ``capacity``."""

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self._loaded: OrderedDict[int, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}

    def resolve(self, name: str) -> ModelVersion:
        match = _MODEL_NAME.match(name or "")
        if match is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"bad model name {name!r}", "model")
        project = Project.objects.filter(slug=match["slug"]).first()
        if project is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no project {match['slug']!r}", "model")
        if match["base"] is not None:
            return base_version(project)
        if match["number"] is None:
            return serving_version(project)
        version = ModelVersion.objects.filter(project=project, number=int(match["number"])).first()
        if version is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"{name!r}: no such version", "model")
        return version

    def get(self, version: ModelVersion) -> Loaded:
        with self._lock:
            loaded = self._loaded.get(version.pk)
            if loaded is not None:
                self._loaded.move_to_end(version.pk)
                return loaded
            loading = self._loading.setdefault(version.pk, threading.Lock())
        # one thread loads a version; others asking for it wait here instead of loading twice
        with loading:
            with self._lock:
                if version.pk in self._loaded:
                    return self._loaded[version.pk]
            log.info("loading %s from %s", version, version.spec)
            model, tokenizer = load_model(version.spec)
            loaded = Loaded(version.pk, version.spec, model, tokenizer)
            with self._lock:
                self._loaded[version.pk] = loaded
                while len(self._loaded) > self.capacity:
                    # requests still holding the evicted model keep it alive until they finish
                    self._loaded.popitem(last=False)
                self._loading.pop(version.pk, None)
            return loaded

    def loaded_ids(self) -> list[int]:
        with self._lock:
            return list(self._loaded)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(HTTPStatus.BAD_REQUEST, "messages must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"messages[{i}] needs a role", "messages")
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if not isinstance(content, str):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"messages[{i}].content must be text", "messages"
            )
        out.append({"role": message["role"], "content": content})
    return out


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be a number in [{lo}, {hi}]", name)
    return float(value)


@dataclass
class ChatRequest:
    """One checked chat completion request, with the loaded model that answers it."""

    messages: list[dict[str, str]]
    version_name: str
    loaded: Loaded
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    include_usage: bool  # streaming: end with a chunk that carries the usage
    logprobs: bool = False  # answer each sampled token's log-probability

    def token_logprobs(self, token_ids: list[int], logprobs: list[float]) -> dict[str, Any]:
        """A choice's ``logprobs`` in the OpenAI shape: one entry per sampled token, EOS
        included; ``token`` is the token decoded on its own, ``bytes`` its UTF-8 bytes."""
        tokenizer = self.loaded.tokenizer
        content = []
        for token_id, logprob in zip(token_ids, logprobs, strict=True):
            token = tokenizer.decode([token_id])
            content.append(
                {
                    "token": token,
                    "logprob": logprob,
                    "bytes": list(token.encode("utf-8")),
                    "top_logprobs": [],
                }
            )
        return {"content": content, "refusal": None}

    def prompt_tokens(self) -> int:
        return len(
            self.loaded.tokenizer.apply_chat_template(
                self.messages, tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )

    def head(self) -> dict[str, Any]:
        """The fields every response and chunk of this request shares."""
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": self.version_name,
            "system_fingerprint": f"{self.version_name}@{self.loaded.spec}",
        }

    @staticmethod
    def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }


class ChatService:
    """The request-independent part: parse, resolve, generate, shape the answer."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """Check the request and load its model; raises `ApiError` before anything is sent."""
        messages = _messages(body)
        name = body.get("model")
        if not isinstance(name, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "model is required", "model")
        max_tokens = int(
            _number(
                body,
                "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens",
                256,
                1,
                MAX_TOKENS_LIMIT,
            )
        )
        temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        n = int(_number(body, "n", 1, 1, 8))
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ApiError(HTTPStatus.BAD_REQUEST, "seed must be an integer", "seed")
        stream_options = body.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "stream_options must be an object", "stream_options"
            )
        logprobs = body.get("logprobs") or False
        if not isinstance(logprobs, bool):
            raise ApiError(HTTPStatus.BAD_REQUEST, "logprobs must be true or false", "logprobs")
        if logprobs and body.get("stream"):
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "logprobs are answered without streaming only",
                "logprobs",
            )
        if body.get("top_logprobs"):
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "top_logprobs is not supported: only the sampled tokens' log-probs are answered",
                "top_logprobs",
            )
        version = self.registry.resolve(name)
        version_name = version.model_name
        close_old_connections()
        return ChatRequest(
            messages=messages,
            version_name=version_name,
            loaded=self.registry.get(version),
            n=n,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed if seed is not None else time.time_ns() % (2**31),
            include_usage=bool(stream_options.get("include_usage")),
            logprobs=logprobs,
        )

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        # imported here to keep torch (loaded by the generation module) out of the web process
        from .core.generation import generate

        request = self.parse(body)
        loaded = request.loaded
        with loaded.lock:
            samples = generate(
                (loaded.model, loaded.tokenizer),
                [request.messages],
                k=request.n,
                temperature=request.temperature,
                top_p=request.top_p,
                max_new_tokens=request.max_tokens,
                seed=request.seed,
                batch_size=request.n,
            )[0]
            prompt_tokens = request.prompt_tokens()
        completion_tokens = sum(s.token_count for s in samples)
        return {
            **request.head(),
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": s.text},
                    "logprobs": (
                        request.token_logprobs(s.token_ids, s.token_logprobs)
                        if request.logprobs
                        else None
                    ),
                    "finish_reason": "stop" if s.finished else "length",
                }
                for i, s in enumerate(samples)
            ],
            "usage": request.usage(prompt_tokens, completion_tokens),
        }

    def stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The answer as OpenAI stream chunks (see `training.serving_stream`).

        The request is checked and its model loaded before this returns, so a bad request
        raises `ApiError` here rather than in the middle of a stream.
        """
        from .serving_stream import stream_chunks

        return stream_chunks(self.parse(body))

    def models(self) -> dict[str, Any]:
        data = []
        for version in ModelVersion.objects.select_related("project").order_by("project", "number"):
            ids = [version.model_name]
            if version.is_serving:
                ids.insert(0, version.project.slug)
            created = int(version.created_at.timestamp())
            data += [
                {"id": i, "object": "model", "created": created, "owned_by": "prefloop"}
                for i in ids
            ]
        return {"object": "list", "data": data}


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
