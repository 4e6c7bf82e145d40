"""Throttled progress writes for the loop's long tasks (sampling, training)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# Seconds between progress writes to the database while generating or training.
PROGRESS_INTERVAL = 0.5


def throttled(write: Callable[..., None]) -> Callable[..., None]:
    """``write`` called at most once per PROGRESS_INTERVAL; ``force=True`` always writes."""
    last = [0.0]

    def call(*args: Any, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            write(*args)

    return call
