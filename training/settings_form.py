"""The round settings as a labelled form on the loop page: one field per ``LoopSettings`` key.

Each field's type, default, choices and bounds come from ``loop_settings.json_schema()`` and its
help text from the comment above the field in ``LoopSettings``, so the form cannot drift from
the settings. Only values that differ from the defaults are stored, as the API stores them;
the API keeps taking the settings as one JSON object.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from .loop_settings import LoopSettings, json_schema

_FIELD_LINE = re.compile(r"^\s{4}(\w+): [^=]+=")


@functools.cache
def help_texts() -> dict[str, str]:
    """The comment lines right above each field of ``LoopSettings``, joined."""
    texts: dict[str, str] = {}
    comment: list[str] = []
    for line in inspect.getsource(LoopSettings).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD_LINE.match(line)
        if match:
            texts[match.group(1)] = " ".join(comment)
        comment = []
    return texts


@dataclass
class Field:
    name: str
    kind: str  # "int", "float", "bool", "choice", "text", "json"
    default: Any
    value: Any
    help: str
    choices: list[str]
    minimum: float | None
    maximum: float | None
    error: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def shown_default(self) -> str:
        if self.kind == "json":
            return json.dumps(self.default) if self.default else "{} (the core's defaults)"
        if self.kind == "bool":
            return "on" if self.default else "off"
        if self.kind == "text" and not self.default:
            return "empty"
        return str(self.default)

    @property
    def shown_value(self) -> str:
        if self.kind == "json":
            return self.value if isinstance(self.value, str) else json.dumps(self.value or {})
        return "" if self.value is None else str(self.value)

    @property
    def step(self) -> str:
        return "any" if self.kind == "float" else "1"


_KINDS = {
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "string": "text",
    "object": "json",
}


def fields(stored: dict[str, Any], errors: dict[str, str] | None = None) -> list[Field]:
    """The form's fields showing ``stored`` values (the defaults for keys left out)."""
    texts = help_texts()
    out = []
    for name, prop in json_schema()["properties"].items():
        kind = "choice" if "enum" in prop else _KINDS[prop["type"]]
        out.append(
            Field(
                name=name,
                kind=kind,
                default=prop["default"],
                value=stored.get(name, prop["default"]),
                help=texts.get(name, prop.get("description", "")),
                choices=list(prop.get("enum", [])),
                minimum=prop.get("minimum"),
                maximum=prop.get("maximum"),
                error=(errors or {}).get(name, ""),
            )
        )
    return out


def parse(data: QueryDict) -> tuple[dict[str, Any], dict[str, str], list[Field]]:
    """The settings a submitted form asks for: (values that differ from the defaults, errors
    by field, the fields showing what was typed). Range checks are the settings' own
    validation (``update_loop_settings``); this only reads each field as its type."""
    defaults = LoopSettings().to_dict()
    values: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in fields({}):
        raw = data.get(field.name, "")
        typed[field.name] = raw
        try:
            value = _read(field, raw)
        except ValueError as exc:
            errors[field.name] = str(exc)
            continue
        typed[field.name] = value
        if value != defaults[field.name]:
            values[field.name] = value
    return values, errors, fields(typed, errors)


def _read(field: Field, raw: str) -> Any:
    raw = raw.strip() if field.kind not in ("text",) else raw
    if field.kind == "bool":
        return raw in ("on", "true", "1")
    if field.kind == "int":
        if raw == "":
            return field.default
        try:
            return int(raw)
        except ValueError:
            raise ValueError("enter a whole number") from None
    if field.kind == "float":
        if raw == "":
            return field.default
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("enter a number") from None
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if field.kind == "json":
        if raw == "":
            return copy.deepcopy(field.default)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise ValueError("not valid JSON: nested too deeply") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value
    if field.kind == "choice" and raw == "":
        return field.default
    return raw


def error_by_field(message: str) -> dict[str, str]:
    """Split a settings validation message ("k: at least 2 ...; top_p: ...") by field."""
    names = {*json_schema()["properties"], "base_model"}
    out: dict[str, str] = {}
    for part in message.split("; "):
        name, sep, rest = part.partition(":")
        # "generation_backend.base_url: ..." belongs to the generation_backend field
        field, dot, key = name.strip().partition(".")
        if sep and field in names:
            out[field] = f"{key}: {rest.strip()}" if dot else rest.strip()
        else:
            out.setdefault("general", part)
    return out
