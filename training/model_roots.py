"""Which base models a lead may name: the demo model, model directories and GGUF files under
the configured model roots, and hub ids the server allows.

A base model spec is read by the worker with the server's permissions, and a version trained
from it is served to every member, so a lead must not be able to point it at ``/etc``, at
another project's versions, or at an arbitrary (and arbitrarily large) hub download. Paths are
resolved (``..`` and symbolic links followed) before they are compared with the roots. Every
refusal says the same thing, whether the path exists or not, so the answers reveal nothing
about the server's files.

Settings (Django settings, read from the environment in ``annotate.settings``):

- ``PREFLOOP_MODEL_ROOTS``: directories whose model directories and ``.gguf`` files may be
  named; empty (the default): ``$VAR_DIR/models`` and the converted-model cache
  (``PREFLOOP_MODEL_CACHE``, where the demo model lives).
- ``PREFLOOP_HUB_ALLOWLIST``: hub ids that may be named, exactly (``org/name``) or by
  organisation (``org/*``); whatever the local hub cache already holds is allowed too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

from .core.loading import MANIFEST, model_cache_dir

# "name" or "org/name" as on the Hugging Face Hub.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")

REFUSED = (
    'base_model: not an available model. Name "demo", a model directory or .gguf file under '
    "the server's model roots (PREFLOOP_MODEL_ROOTS), or a hub id the server allows "
    "(PREFLOOP_HUB_ALLOWLIST or its local hub cache)."
)


def model_roots() -> list[Path]:
    """The resolved directories base models may come from."""
    configured = list(getattr(settings, "PREFLOOP_MODEL_ROOTS", []) or [])
    if not configured:
        configured = [Path(settings.VAR_DIR) / "models", model_cache_dir()]
    return [Path(str(root)).expanduser().resolve() for root in configured]


def versions_root() -> Path:
    """Where every project's trained versions live (``models_dir`` of each project)."""
    return (Path(settings.VAR_DIR) / "models").resolve()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, found as huggingface_hub finds it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return cache / "huggingface" / "hub"


def is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and ".." not in text


def _hub_allowed(hub_id: str) -> bool:
    for entry in getattr(settings, "PREFLOOP_HUB_ALLOWLIST", []) or []:
        entry = str(entry).strip()
        if entry == hub_id or (entry.endswith("/*") and hub_id.startswith(entry[:-1])):
            return True
    cached = hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    try:
        return (cached / "snapshots").is_dir()
    except OSError:
        return False


def _is_version_directory(path: Path) -> bool:
    """Whether ``path`` lies in a project's versions or is itself a trained version."""
    from annotate.models import Project

    root = versions_root()
    if path.is_relative_to(root) and path != root:
        slug = path.relative_to(root).parts[0]
        if Project.objects.filter(slug=slug).exists():
            return True
    for candidate in (path, *path.parents):
        if (candidate / MANIFEST).is_file():
            return True
        if candidate == root:
            break
    return False


def _path_allowed(path: Path) -> bool:
    if not any(path.is_relative_to(root) for root in model_roots()):
        return False
    if _is_version_directory(path):
        return False
    if path.suffix == ".gguf":
        return path.is_file()
    return path.is_dir() and (path / "config.json").is_file()


def check_base_model(text: str) -> None:
    """Refuse a base model spec the server does not allow (see the module docstring).

    ``text`` is already stripped and not empty or "demo". Raises ValidationError with the same
    message whether the model is not allowed or not there.
    """
    if is_hub_id(text) and not text.endswith(".gguf"):
        if _hub_allowed(text):
            return
        raise ValidationError(REFUSED)
    try:
        allowed = _path_allowed(Path(text).expanduser().resolve())
    except (OSError, ValueError, RuntimeError):
        # Names the file system refuses (a component over 255 bytes, a NUL, a link loop).
        allowed = False
    if not allowed:
        raise ValidationError(REFUSED)
