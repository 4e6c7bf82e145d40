"""The key ``serve_model`` requires and the Playground sends, shared through the var directory.

``PREFLOOP_SERVE_API_KEY`` names it when set (every serving machine and the web process then
use the same value); otherwise the first process that needs it generates one into
``$PREFLOOP_VAR_DIR/serve_api_key`` (mode 0600) and every later one on the machine reads it, so
``serve_model`` and the Playground agree without configuration and nothing answers without it.
This module loads no model: the web process imports it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from django.conf import settings

FILE_NAME = "serve_api_key"


def key_file() -> Path:
    return Path(settings.VAR_DIR) / FILE_NAME


def serve_api_key() -> str:
    """``PREFLOOP_SERVE_API_KEY``, else the key in the var directory, made on first use."""
    if settings.PREFLOOP_SERVE_API_KEY:
        return str(settings.PREFLOOP_SERVE_API_KEY)
    path = key_file()
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: of two processes
    # starting at once the first link wins, and neither ever reads a half-written key.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{FILE_NAME}-")
    try:
        with os.fdopen(fd, "w") as fh:  # mkstemp creates it with mode 0600
            fh.write(secrets.token_urlsafe(32))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return _read(path)


def _read(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"{path} is empty: delete it to have a new key generated")
    return key
