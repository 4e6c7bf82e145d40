"""The API's OpenAPI schema: drf-spectacular's, with the errors each operation can answer.

Every error is JSON (``annotate.api.errors``): ``{"detail": "..."}``, except a 400 from a
serializer, which names each bad field: ``{"field": ["message", ...]}``. Which errors an
operation lists follows from what it takes, so that a new endpoint documents them without
repeating them by hand:

- 400: it reads a body or query parameters, or changes something (a service may refuse the
  change as invalid);
- 401, 403: it needs a signed-in user; 403 only where there is a project or an object to be
  refused, or a change to make;
- 404: it names an object in its path;
- 409: it changes something, and a service may find it conflicts with the current state;
- 413, 415: it reads a body (over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, or of a media type no
  parser reads);
- 429: the token endpoint, throttled with the other login endpoints (``annotate.throttle``).

A body the API reads as JSON is documented as JSON only: DRF also parses the same fields sent
as a form, but a form cannot carry the nested objects and lists the schema describes.

An operation adds others (410: a lease that expired) with ``extend_schema(responses=...)``,
using :func:`error_response`; what a view declares for a status is kept.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="what went wrong, naming the field or line")


def error_response(description: str) -> OpenApiResponse:
    """An error an operation declares itself, with the standard error body."""
    return OpenApiResponse(ErrorSerializer, description=description)


# A serializer's 400 has a list of messages per field (or nested objects for nested fields);
# a service's 400 has "detail".
INVALID_SCHEMA = {
    "type": "object",
    "description": '{"detail": "..."} or, per bad field, {"<field>": ["message", ...]}',
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": {"oneOf": [{"type": "array", "items": {}}, {"type": "object"}]},
}

_DESCRIPTIONS = {
    400: "The request is invalid; the body names the field or line.",
    401: "No valid credentials (a token: `Authorization: Token <key>`, or a session).",
    403: "Not allowed: not a lead of the project, or the action is not yours to take.",
    404: "No such object, or not one you can see.",
    409: "Conflicts with the current state (for example a round already open, a pair "
    "already judged).",
    413: "The request body is too large.",
    415: "The body's media type is not one the operation reads.",
    429: "Too many failed logins; try again after Retry-After seconds.",
}
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class AutoSchema(SpectacularAutoSchema):
    def _get_serializer_field_meta(self, field: Any, direction: str) -> dict[str, Any]:
        meta = super()._get_serializer_field_meta(field, direction)
        if direction == "request" and type(field) is serializers.CharField:
            # DRF refuses a NUL anywhere in a text field, and a text that is blank once
            # trimmed where blanks are not allowed
            if field.allow_blank or not field.trim_whitespace:
                meta["pattern"] = r"^[^\u0000]*$"
            else:
                meta["pattern"] = r"^[^\u0000]*[^\u0000\s][^\u0000]*$"
        return meta

    def map_parsers(self) -> list[Any]:
        media_types = super().map_parsers()
        if "application/json" in media_types:
            return ["application/json"]
        return media_types

    def get_operation(
        self, path: str, path_regex: str, path_prefix: str, method: str, registry: Any
    ) -> dict[str, Any] | None:
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for status in self._error_statuses(operation):
            if str(status) in responses:
                continue
            responses[str(status)] = {
                "description": _DESCRIPTIONS[status],
                "content": {"application/json": {"schema": self._error_schema(status)}},
            }
        return operation

    def _error_statuses(self, operation: dict[str, Any]) -> list[int]:
        locations = {parameter["in"] for parameter in operation.get("parameters", [])}
        body = "requestBody" in operation
        changes = self.method not in _SAFE_METHODS
        signed_in = any(isinstance(p, IsAuthenticated) for p in self.view.get_permissions())
        statuses = []
        if body or changes or "query" in locations:
            statuses.append(400)
        if signed_in:
            statuses.append(401)
            if changes or "path" in locations:
                statuses.append(403)
        if "path" in locations:
            statuses.append(404)
        if changes and signed_in:
            statuses.append(409)
        if body:
            statuses += [413, 415]
        if self.path == reverse("api-token"):
            statuses.append(429)
        return statuses

    def _error_schema(self, status: int) -> dict[str, str]:
        if status == 400:
            component = ResolvedComponent(
                name="InvalidRequest",
                type=ResolvedComponent.SCHEMA,
                object="InvalidRequest",
                schema=INVALID_SCHEMA,
            )
            self.registry.register_on_missing(component)
            return component.ref
        component = self.resolve_serializer(ErrorSerializer, "response")
        return component.ref
