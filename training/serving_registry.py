"""The models ``serve_model`` answers with: names resolved to versions, loaded ones kept.

A request names a version (``"<slug>"``, ``"<slug>:v3"``, ``"<slug>:base"``); the registry finds
its row and hands out the loaded model, loading it once however many requests ask at the same
time and dropping the least recently used beyond its capacity.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from django.conf import settings

from annotate.models import Project

from .core.loading import load_model
from .models import ModelVersion
from .services import current_base_version, serving_version

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"^(?P<slug>[-\w]+)(?::(?:v(?P<number>\d+)|(?P<base>base)))?$")


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


@dataclass
class Loaded:
    """A loaded model; the lock keeps one generation at a time per model."""

    version_id: int
    spec: str
    model: Any
    tokenizer: Any
    fingerprint: str = ""  # what answers show of the weights: the label and a hash, no path
    lock: threading.Lock = field(default_factory=threading.Lock)


def fingerprint(version: ModelVersion) -> str:
    """``"v3-1a2b3c4d5e6f"``: the version's label and a short hash of its row and weights'
    location, which changes with the weights a version row names (a base changed before the
    first round) and shows nothing of where they are on this machine."""
    digest = hmac.new(
        settings.SECRET_KEY.encode(), f"{version.pk}\0{version.spec}".encode(), hashlib.sha256
    )
    return f"{version.label}-{digest.hexdigest()[:12]}"


# Loaded models are kept by version row and spec: the base's row keeps its number but names
# other weights once the project's base_model changes before its first round.
_Key = tuple[int, str]


class Registry:
    """Loaded models by version, least recently used dropped beyond ``capacity``."""

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self._loaded: OrderedDict[_Key, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[_Key, threading.Lock] = {}

    def resolve(self, name: str) -> ModelVersion:
        match = _MODEL_NAME.match(name or "")
        if match is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"bad model name {name!r}", "model")
        project = Project.objects.filter(slug=match["slug"]).first()
        if project is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no project {match['slug']!r}", "model")
        base = current_base_version(project)
        if match["base"] is not None:
            return base
        if match["number"] is None:
            return serving_version(project)
        version = ModelVersion.objects.filter(project=project, number=int(match["number"])).first()
        if version is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"{name!r}: no such version", "model")
        return version

    def get(self, version: ModelVersion) -> Loaded:
        key = (version.pk, version.spec)
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is not None:
                self._loaded.move_to_end(key)
                return loaded
            loading = self._loading.setdefault(key, threading.Lock())
        # one thread loads a version; others asking for it wait here instead of loading twice
        with loading:
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            log.info("loading %s from %s", version, version.spec)
            model, tokenizer = load_model(version.spec)
            loaded = Loaded(version.pk, version.spec, model, tokenizer, fingerprint(version))
            with self._lock:
                # the weights this row named before are not asked for again
                for stale in [k for k in self._loaded if k[0] == version.pk]:
                    del self._loaded[stale]
                self._loaded[key] = loaded
                while len(self._loaded) > self.capacity:
                    # requests still holding the evicted model keep it alive until they finish
                    self._loaded.popitem(last=False)
                self._loading.pop(key, None)
            return loaded

    def holds(self, version: ModelVersion) -> bool:
        """Whether the weights ``version`` names now are loaded."""
        with self._lock:
            return (version.pk, version.spec) in self._loaded
