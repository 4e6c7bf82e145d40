"""The Django-free ML core of prefloop: models, generation, pairing and DPO training.

Everything here takes plain Python data (pairs, prompts, a config, paths) and returns plain
results, so it runs the same from a Celery worker, the command line or a notebook.

The names below are loaded on first use, so that importing one light module of the core
(``training.core.config``, ``training.core.data``) does not pull in torch: the web process
validates DPO settings through ``config`` and must stay free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> the module of the core that defines it.
_HOMES = {
    # configuration and data
    "DPOConfig": "config",
    "PreferencePair": "data",
    "read_pairs": "data",
    "read_prompts": "data",
    "DataError": "data",
    # models and versions
    "load_model": "loading",
    "resolve_demo_model": "loading",
    "ModelLoadError": "loading",
    "write_version": "versions",
    "load_version": "versions",
    "SavedVersion": "versions",
    "IncompleteVersionError": "versions",
    # generation and pairing
    "generate": "generation",
    "Sample": "generation",
    "make_pairs": "pairing",
    # training
    "train_dpo": "trainer",
    "TrainResult": "trainer",
    "ProgressCallback": "trainer",
    # losses (pure functions)
    "preference_loss": "losses",
    "sigmoid_loss": "losses",
    "ipo_loss": "losses",
    "hinge_loss": "losses",
    "robust_loss": "losses",
}

__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    # the same names for type checkers, which do not follow __getattr__
    from .config import DPOConfig  # noqa: F401
    from .data import DataError, PreferencePair, read_pairs, read_prompts  # noqa: F401
    from .generation import Sample, generate  # noqa: F401
    from .loading import ModelLoadError, load_model, resolve_demo_model  # noqa: F401
    from .losses import hinge_loss, ipo_loss, preference_loss, robust_loss, sigmoid_loss  # noqa: F401
    from .pairing import make_pairs  # noqa: F401
    from .trainer import ProgressCallback, TrainResult, train_dpo  # noqa: F401
    from .versions import IncompleteVersionError, SavedVersion, load_version, write_version  # noqa: F401
