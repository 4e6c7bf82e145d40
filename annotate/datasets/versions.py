"""Model versions by name in exports: "base", "v1", "v2" ..., as on every other page of prefloop.

A completion keeps the training app's ModelVersion id as a plain integer, so that the annotation
app does not depend on the training app. The training app registers, in its
``AppConfig.ready``, a lookup from a project to its versions' ids and numbers; exports name each
completion's version through it and resolve the ``versions`` filter with it. Without a registered
lookup no completion has a named version.

``v0`` is accepted as another name of the base and always written as "base".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from annotate.errors import InvalidInput
from annotate.models import Project

# project id -> {ModelVersion id: version number}
VersionLookup = Callable[[int], Mapping[int, int]]

_LABEL = re.compile(r"^(?:base|v(\d+))$")
_lookup: list[VersionLookup] = []


def register_version_lookup(lookup: VersionLookup) -> None:
    """Set the lookup of a project's versions; registering again replaces it (app reloads)."""
    _lookup[:] = [lookup]


def version_label(number: int) -> str:
    """The name of version ``number``: "base" for 0, else "v<number>"."""
    return "base" if number == 0 else f"v{number}"


def version_number(label: str) -> int:
    """The number a version name stands for ("base" and "v0" are 0); InvalidInput if malformed."""
    match = _LABEL.match(label.strip().lower())
    if match is None:
        raise InvalidInput(f'"versions": {label!r} is not a version name (base, v1, v2, ...)')
    return int(match[1] or 0)


def version_labels(project: Project) -> dict[int, str]:
    """The project's versions by id: {ModelVersion id: "base" | "v1" | ...}."""
    if not _lookup:
        return {}
    return {pk: version_label(number) for pk, number in _lookup[0](project.pk).items()}


def version_ids(project: Project, labels: Iterable[str]) -> list[int]:
    """The ids of the named versions of the project.

    Raises:
        InvalidInput: a name is malformed or the project has no such version.
    """
    by_number = {number: pk for pk, number in (_lookup[0](project.pk) if _lookup else {}).items()}
    ids: list[int] = []
    for label in labels:
        number = version_number(label)
        if number not in by_number:
            known = ", ".join(version_label(n) for n in sorted(by_number)) or "none yet"
            raise InvalidInput(
                f'"versions": the project has no version {version_label(number)} (it has {known})'
            )
        ids.append(by_number[number])
    return ids
