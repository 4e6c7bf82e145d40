"""The deployment's model store, configured from the Django settings (see ``core.store``).

``PREFLOOP_MODEL_STORE`` names it (a directory or an fsspec URL); empty, it is the local
``$PREFLOOP_VAR_DIR/models``. Readers cache what they fetch under ``$PREFLOOP_VAR_DIR/models``.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .core.store import ModelStore, set_store_factory


def cache_dir() -> Path:
    return Path(settings.VAR_DIR) / "models"


def model_store() -> ModelStore:
    url = str(getattr(settings, "PREFLOOP_MODEL_STORE", "") or "").strip()
    return ModelStore(url or cache_dir(), cache_dir())


def configure() -> None:
    """Resolve ``store:`` specs in this process through the settings' store."""
    set_store_factory(model_store)
