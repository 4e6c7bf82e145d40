"""The ``generation_backend`` loop setting: where a round's completions are sampled.

``{"kind": "hf"}`` (the default) samples with the built-in batched sampler in the generate
worker. ``{"kind": "openai", "base_url": ..., "model": ...}`` asks any OpenAI-compatible chat
completions endpoint (vLLM, TGI, llama.cpp's server, or prefloop's own ``serve_model``);
``api_key_env`` optionally names the environment variable that holds its key, so the key itself
is never stored in settings. ``model`` is the engine's name of the version sampled, with
``{project}`` (the project's slug), ``{version}`` ("base", "v1", ...) and ``{name}``
(``serve_model``'s name, ``"<slug>:v1"``) filled in; the default ``{name}`` suits ``serve_model``.
Light (no torch): the web process validates settings on every PATCH.
"""

from __future__ import annotations

import re
import string
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

BACKEND_KINDS = ("hf", "openai")
DEFAULT_BACKEND: dict[str, Any] = {"kind": "hf"}
MODEL_FIELDS = ("project", "version", "name")
_KEYS = {"hf": {"kind"}, "openai": {"kind", "base_url", "model", "api_key_env"}}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_URL = 500
_MAX_MODEL = 300


def _fail(key: str, message: str) -> ValidationError:
    return ValidationError(f"generation_backend.{key}: {message}")


def _check_model(template: Any) -> None:
    if not isinstance(template, str) or not template.strip():
        raise _fail("model", "must be a non-empty string")
    if len(template) > _MAX_MODEL:
        raise _fail("model", f"must be at most {_MAX_MODEL} characters")
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise _fail("model", f"bad template: {exc}") from None
    for name in fields:
        if name not in MODEL_FIELDS:
            known = ", ".join("{" + f + "}" for f in MODEL_FIELDS)
            raise _fail("model", f"unknown placeholder {{{name}}}: use {known}")


def validate_generation_backend(data: Any) -> dict[str, Any]:
    """Check a ``generation_backend`` setting; returns it as given.

    Raises:
        ValidationError: naming ``generation_backend.<key>``.
    """
    if not isinstance(data, dict):
        raise ValidationError("generation_backend: must be an object")
    kind = data.get("kind")
    if kind not in BACKEND_KINDS:
        raise _fail("kind", f"must be one of {', '.join(BACKEND_KINDS)}")
    if "api_key" in data:
        raise _fail(
            "api_key",
            "keys are never stored in settings: name the environment variable that holds "
            "it in api_key_env",
        )
    unknown = sorted(set(data) - _KEYS[kind])
    if unknown:
        raise _fail(unknown[0], f"not a setting of the {kind!r} backend")
    if kind == "hf":
        return dict(data)
    url = data.get("base_url")
    if not isinstance(url, str) or not url:
        raise _fail("base_url", "required: the endpoint's URL, e.g. http://host:8000/v1")
    if len(url) > _MAX_URL:
        raise _fail("base_url", f"must be at most {_MAX_URL} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _fail("base_url", "must be an http:// or https:// URL")
    _check_model(data.get("model", "{name}"))
    env = data.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.match(env)):
        raise _fail("api_key_env", "must be the name of an environment variable")
    return dict(data)


def engine_model_name(template: str, project_slug: str, label: str) -> str:
    """The engine's name of a version: the ``model`` template filled in."""
    return template.format(project=project_slug, version=label, name=f"{project_slug}:{label}")


def backend_schema() -> dict[str, Any]:
    """The JSON schema of ``generation_backend`` (the API documents loop settings with it):
    every key, and per kind (``oneOf``) the keys it takes and needs, with the checks of
    :func:`validate_generation_backend`."""
    placeholder = "|".join(MODEL_FIELDS)
    return {
        "type": "object",
        "default": DEFAULT_BACKEND,
        "additionalProperties": False,
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": list(BACKEND_KINDS), "default": "hf"},
            "base_url": {
                "type": "string",
                "maxLength": _MAX_URL,
                "pattern": r"^https?://[^/?#\s\u0000]+[^\u0000]*$",
                "description": "openai: the endpoint, e.g. http://gpu-1:8000/v1",
            },
            "model": {
                "type": "string",
                # no maxLength beside the pattern: schemathesis folds one into the pattern
                # and loses the escape of its "}" on the way
                "pattern": rf"^([^{{}}\u0000]|\{{({placeholder})\}})*$",
                "default": "{name}",
                "description": "openai: the engine's model name of the sampled version, at "
                f"most {_MAX_MODEL} characters; {{project}}, {{version}} (base, v1, ...) and "
                "{name} (<slug>:v1) are filled in",
            },
            "api_key_env": {
                "type": "string",
                "pattern": _ENV_NAME.pattern,
                "description": "openai: the environment variable that holds the API key",
            },
        },
        "oneOf": [
            {
                "properties": {"kind": {"enum": ["hf"]}},
                "additionalProperties": False,
            },
            {"properties": {"kind": {"enum": ["openai"]}}, "required": ["base_url"]},
        ],
    }
