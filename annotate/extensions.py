"""Project fields that other apps contribute, and the one signal annotate sends them.

The annotation app knows nothing of training, yet a project's API resource and its seeding carry
the loop's settings. This module is the seam: an app registers a :class:`ProjectField` (in its
``AppConfig.ready``), and from then on

- ``GET /api/projects/{id}/`` shows the field, read through ``field.read``;
- ``PATCH /api/projects/{id}/`` and :func:`annotate.services.create_project` accept it, validate it
  with ``field.clean`` (a field error naming the field, HTTP 400) and store it with
  ``field.write`` inside the same transaction as the project's own columns;
- the OpenAPI schema documents it with ``field.schema``.

The owning app stores the value wherever it likes (its own table), so annotate never imports it.

Signals:
    judgment_recorded: sent by :func:`annotate.services.submit_judgment` once for each new
    judgment (never for an idempotent replay), inside the transaction that wrote it; receivers
    that start work should do so on ``transaction.on_commit``. Keyword arguments:
    ``judgment`` (the new :class:`~annotate.models.Judgment`; its ``comparison`` carries the
    pair's id, project, prompt, round, kind, gold answer and judgment count including this one,
    and its ``project`` the project's overlap, gold and repeat settings, each read without a
    further query). ``sender`` is the Judgment class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.dispatch import Signal

if TYPE_CHECKING:
    from .models import Project

judgment_recorded = Signal()


@dataclass(frozen=True)
class ProjectField:
    """A per-project setting owned by another app."""

    # The key in the project's API resource and in ``create_project(**fields)``.
    name: str
    # The stored value for a project (the default when nothing is stored yet).
    read: Callable[[Project], Any]
    # Checks and normalises an incoming value; raises django.core.exceptions.ValidationError
    # with a message that names the field.
    clean: Callable[[Any], Any]
    # Stores a cleaned value; called inside the caller's transaction, after the project is saved.
    write: Callable[[Project, Any], None]
    # OpenAPI schema of the value.
    schema: Mapping[str, Any] = field(default_factory=dict)
    # Checks a cleaned value against the project it is about to be written to, seeing every
    # other contributed value of the same change; raises annotate.errors.ServiceError. Called
    # for every field before any is written.
    check: Callable[[Project, Any, Mapping[str, Any]], None] | None = None
    help_text: str = ""


_registry: dict[str, ProjectField] = {}


def register_project_field(spec: ProjectField) -> None:
    """Add a contributed field; registering the same name again replaces it (app reloads)."""
    _registry[spec.name] = spec


def project_fields() -> list[ProjectField]:
    return list(_registry.values())


def split_contributed(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a project's own column values from contributed ones: (own, contributed)."""
    own = {k: v for k, v in values.items() if k not in _registry}
    contributed = {k: v for k, v in values.items() if k in _registry}
    return own, contributed


def clean_contributed(values: Mapping[str, Any]) -> dict[str, Any]:
    """Each contributed value cleaned by its owner; raises ValidationError keyed by field."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        try:
            cleaned[name] = _registry[name].clean(value)
        except ValidationError as exc:
            errors[name] = exc.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def write_contributed(project: Project, cleaned: Mapping[str, Any]) -> None:
    """Check every value against the project, then write them in registration order."""
    for name, value in cleaned.items():
        check = _registry[name].check
        if check is not None:
            check(project, value, cleaned)
    for name, spec in _registry.items():
        if name in cleaned:
            spec.write(project, cleaned[name])
