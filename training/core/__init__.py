"""The Django-free ML core of prefloop: models, generation, pairing and DPO training.

Everything here takes plain Python data (pairs, prompts, a config, paths) and returns plain
results, so it runs the same from a Celery worker, the command line or a notebook.
"""

from .config import DPOConfig
from .data import DataError, PreferencePair, read_pairs, read_prompts
from .generation import Sample, generate
from .loading import ModelLoadError, load_model, resolve_demo_model
from .losses import hinge_loss, ipo_loss, preference_loss, robust_loss, sigmoid_loss
from .pairing import make_pairs
from .trainer import ProgressCallback, TrainResult, train_dpo
from .versions import IncompleteVersionError, ModelVersion, load_version, write_version

__all__ = [
    # configuration and data
    "DPOConfig",
    "PreferencePair",
    "read_pairs",
    "read_prompts",
    "DataError",
    # models and versions
    "load_model",
    "resolve_demo_model",
    "ModelLoadError",
    "write_version",
    "load_version",
    "ModelVersion",
    "IncompleteVersionError",
    # generation and pairing
    "generate",
    "Sample",
    "make_pairs",
    # training
    "train_dpo",
    "TrainResult",
    "ProgressCallback",
    # losses (pure functions)
    "preference_loss",
    "sigmoid_loss",
    "ipo_loss",
    "hinge_loss",
    "robust_loss",
]
