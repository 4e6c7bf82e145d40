"""Asks the ``serve_model`` process (``training.serving``) for one chat completion over HTTP.

The web process loads no model itself: the Playground reaches the versions through this client,
with the key ``serve_model`` requires (``training.serving_key``: the same on one machine).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import TypedDict

from django.conf import settings

from .serving_key import serve_api_key

log = logging.getLogger(__name__)

# Generating on a CPU can take minutes for a long answer.
_TIMEOUT_S = 300


class Reply(TypedDict):
    """The completion's text, or why there is none (then ``text`` is empty)."""

    text: str
    error: str | None
    finished: bool | None  # False when max_tokens cut the answer off; None without an answer


def ask_model_server(model: str, prompt: str, max_tokens: int) -> Reply:
    """One chat completion of ``prompt`` from ``model`` (``"<project-slug>:v<n>"``)."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "seed": 0,
        }
    ).encode()
    url = f"http://127.0.0.1:{settings.PREFLOOP_SERVE_PORT}/v1/chat/completions"
    try:
        key = serve_api_key()
    except (OSError, ValueError):
        log.exception("reading serve_model's key failed")
        return {"text": "", "error": "the model server's key cannot be read", "finished": None}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    request = urllib.request.Request(  # noqa: S310 - a fixed local http URL
        url, data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310
            data = json.loads(response.read())
        choice = data["choices"][0]
        return {
            "text": choice["message"]["content"],
            "error": None,
            "finished": choice.get("finish_reason") != "length",
        }
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        if exc.code == 401:
            detail += (
                " (serve_model was started with another key: give it and the web process the "
                "same PREFLOOP_SERVE_API_KEY, or neither)"
            )
        return {"text": "", "error": f"{exc.code}: {detail}", "finished": None}
    except (OSError, ValueError, KeyError) as exc:
        error = f"the model server is not reachable at {url}: {exc}"
        return {"text": "", "error": error, "finished": None}
