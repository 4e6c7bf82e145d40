"""The models ``serve_model`` answers with: names resolved to versions, loaded ones kept.

A request names a version (``"<slug>"``, ``"<slug>:v3"``, ``"<slug>:base"``); the registry finds
its row and hands out the loaded model, loading it once however many requests ask at the same
time and dropping the least recently used beyond its capacity.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from annotate.models import Project

from .core.loading import load_model
from .models import ModelVersion
from .services import base_version, serving_version

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
    lock: threading.Lock = field(default_factory=threading.Lock)


class Registry:
    """Loaded models by version, least recently used dropped beyond ``capacity``."""

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self._loaded: OrderedDict[int, Loaded] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}

    def resolve(self, name: str) -> ModelVersion:
        match = _MODEL_NAME.match(name or "")
        if match is None:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"bad model name {name!r}", "model")
        project = Project.objects.filter(slug=match["slug"]).first()
        if project is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no project {match['slug']!r}", "model")
        if match["base"] is not None:
            return base_version(project)
        if match["number"] is None:
            return serving_version(project)
        version = ModelVersion.objects.filter(project=project, number=int(match["number"])).first()
        if version is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"{name!r}: no such version", "model")
        return version

    def get(self, version: ModelVersion) -> Loaded:
        with self._lock:
            loaded = self._loaded.get(version.pk)
            if loaded is not None:
                self._loaded.move_to_end(version.pk)
                return loaded
            loading = self._loading.setdefault(version.pk, threading.Lock())
        # one thread loads a version; others asking for it wait here instead of loading twice
        with loading:
            with self._lock:
                if version.pk in self._loaded:
                    return self._loaded[version.pk]
            log.info("loading %s from %s", version, version.spec)
            model, tokenizer = load_model(version.spec)
            loaded = Loaded(version.pk, version.spec, model, tokenizer)
            with self._lock:
                self._loaded[version.pk] = loaded
                while len(self._loaded) > self.capacity:
                    # requests still holding the evicted model keep it alive until they finish
                    self._loaded.popitem(last=False)
                self._loading.pop(version.pk, None)
            return loaded

    def loaded_ids(self) -> list[int]:
        with self._lock:
            return list(self._loaded)
