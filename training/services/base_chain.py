"""A project's base model once it has trained versions: fixed, unless the lead starts a new chain.

Every trained version is DPO-trained against the base model of its chain (the reference of
the loss), so changing ``base_model`` under them would silently mix references. Once a project
has trained versions a change is refused, unless the lead asks for a new chain
(``new_chain: true`` beside ``base_model``): then the new base becomes a root version of its
own, serving from now on and the reference of the rounds that follow; the earlier versions
stay listed and can still be promoted back.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate.errors import InvalidInput
from annotate.models import Project

from ..models import ModelVersion, ProjectLoop
from .versions import next_version_number, promote

FIXED = (
    "base_model: this project has trained versions, which were trained against its base "
    "model; send new_chain: true with the new base_model to start a new chain from it."
)


def has_trained_versions(project: Project) -> bool:
    return ModelVersion.objects.filter(project=project, parent__isnull=False).exists()


def check_change(project: Project, base_model: str, *, new_chain: bool) -> None:
    """Refuse a new base model for a project with trained versions, unless ``new_chain``."""
    if project.pk is None or new_chain:
        return
    current = ProjectLoop.of(project).base_model or "demo"
    if (base_model or "demo") != current and has_trained_versions(project):
        raise InvalidInput(FIXED)


@transaction.atomic
def start_new_chain(project: Project) -> ModelVersion | None:
    """Make the stored base model the root of a new chain; None when it already is one."""
    spec = ProjectLoop.of(project).base_model or "demo"
    root = (
        ModelVersion.objects.filter(project=project, parent__isnull=True)
        .order_by("-number")
        .first()
    )
    if root is None or root.spec == spec:
        return None
    version = ModelVersion.objects.create(
        project=project,
        number=next_version_number(project),
        spec=spec,
        state=ModelVersion.State.CANDIDATE,
        promoted_at=timezone.now(),
    )
    promote(version)
    return version


def check_field(project: Project, value: Any, cleaned: Any) -> None:
    """``check`` hook of the base_model project field (see annotate.extensions)."""
    check_change(project, str(value), new_chain=bool(cleaned.get("new_chain")))


def clean_new_chain(value: Any) -> bool:
    from django.core.exceptions import ValidationError

    if not isinstance(value, bool):
        raise ValidationError("new_chain: must be true or false")
    return value


def write_new_chain(project: Project, value: bool) -> None:
    if value:
        start_new_chain(project)
