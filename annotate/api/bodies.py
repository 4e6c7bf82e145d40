"""OpenAPI schemas of the request bodies that are JSON lists rather than serializers: the
prompts and pairs a lead posts. They state the rules of ``annotate.datasets.formats`` that a
schema can (types, required keys, choices); the rest (a prompt must not end with the
assistant's turn, the size caps per cell and row) is checked per item and answered with a 400
naming the item and field."""

from __future__ import annotations

from typing import Any

from annotate.datasets.formats import ROLES
from annotate.models import Comparison, Prompt

_MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": list(ROLES)},
        "content": {"type": "string"},
    },
    "required": ["role", "content"],
}
_MESSAGES = {"type": "array", "items": _MESSAGE, "minItems": 1}
_PROMPT = {
    "oneOf": [
        {"type": "string", "pattern": r"\S", "description": "one user turn"},
        _MESSAGES,
    ]
}
_ABSENT = {"type": "string", "enum": [""], "nullable": True, "description": "read as absent"}
_COMMON: dict[str, Any] = {
    "metadata": {"anyOf": [{"type": "object", "nullable": True}, _ABSENT]},
    "split": {"type": "string", "enum": ["", *Prompt.Split.values], "nullable": True},
}
# "messages" when given, else "prompt" (which is then not read)
_CHAT = [
    {"properties": {"messages": _MESSAGES}, "required": ["messages"]},
    {"properties": {"messages": _ABSENT, "prompt": _PROMPT}, "required": ["prompt"]},
]


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"type": "array", "items": item, "minItems": 1}}


PROMPTS = _list_of({"type": "object", "properties": _COMMON, "anyOf": _CHAT})
PAIRS = _list_of(
    {
        "type": "object",
        "properties": {
            **_COMMON,
            "completion_a": {"type": "string"},
            "completion_b": {"type": "string"},
            "kind": {"type": "string", "enum": ["", *Comparison.PAIR_KINDS], "nullable": True},
        },
        "required": ["completion_a", "completion_b"],
        "anyOf": _CHAT,
    }
)
