"""Chat completion requests to ``serve_model``: checked, answered whole or as stream chunks.

Nothing here speaks HTTP (``training.serving`` does): a request body goes in, an OpenAI-shaped
answer or an `ApiError` comes out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from django.db import close_old_connections

from .models import ModelVersion
from .serving_registry import ApiError, Loaded, Registry

# Longest completion one request may ask for.
MAX_TOKENS_LIMIT = 2048


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
            "system_fingerprint": self.loaded.fingerprint,
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
