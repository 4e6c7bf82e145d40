"""Asks the ``serve_model`` process (``training.serving``) for one chat completion over HTTP.

The web process loads no model itself: the Playground reaches the versions through this client.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TypedDict

from django.conf import settings

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
    request = urllib.request.Request(  # noqa: S310 - a fixed local http URL
        url, data=body, headers={"Content-Type": "application/json"}
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
        return {"text": "", "error": f"{exc.code}: {detail}", "finished": None}
    except (OSError, ValueError, KeyError) as exc:
        error = f"the model server is not reachable at {url}: {exc}"
        return {"text": "", "error": error, "finished": None}
