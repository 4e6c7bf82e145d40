"""The model store: where trained versions are published so that every machine can load them.

A store is a local directory or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``file:///srv/models``, ``memory://`` in tests). A version lives under its key
(``<project-slug>/v<N>``) as the files of its version directory (see ``versions``), its
manifest ``prefloop_version.json`` (with every file's size and SHA-256) last:

- publishing uploads each file under a temporary name and renames it into place, the manifest
  after every other file, so a reader that sees the manifest sees a complete version;
- readers fetch a version into their local cache (``$PREFLOOP_VAR_DIR/models/<key>``),
  check every file against the manifest's checksum, and rename the copy into place; a file that
  does not match is refused (``StoreError`` naming it) and fetched once more, then refused for
  good. A cached copy whose manifest matches the store's is reused without a download.

When the store is the cache directory itself (the default), publishing and fetching are the
directory as written by the trainer.

A spec ``store:<key>`` names a stored version; ``loading.load_model`` resolves it through the
store that ``current_store`` returns (the one ``set_store_factory`` configured, else the one the
environment names: ``PREFLOOP_MODEL_STORE`` and ``PREFLOOP_VAR_DIR``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "prefloop_version.json"
PREFIX = "store:"
# "<project-slug>/v<N>": the only keys a store holds.
_KEY = re.compile(r"[A-Za-z0-9][\w-]{0,99}/v\d{1,9}")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://")


class StoreError(RuntimeError):
    """A stored version that cannot be published or fetched; the message says which and why."""


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise StoreError(f"not a model store key (<project>/v<N>): {key!r}")
    return key


def spec_of(key: str) -> str:
    """The model spec of a stored version."""
    return PREFIX + check_key(key)


def key_of(spec: str) -> str | None:
    """The store key of a ``store:<key>`` spec, None for any other spec."""
    if not str(spec).startswith(PREFIX):
        return None
    return check_key(str(spec)[len(PREFIX) :])


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_of(manifest: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise StoreError(f"{where}: the manifest lists no files")
    for name in files:
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts or not parts or name == MANIFEST:
            raise StoreError(f"{where}: the manifest names an unsafe file {name!r}")
    return files


class ModelStore:
    """A store at ``url`` (a directory or an fsspec URL) read through the cache ``cache_dir``."""

    def __init__(self, url: str | Path, cache_dir: str | Path) -> None:
        self.url = str(url).rstrip("/") or "/"
        self.cache_dir = Path(cache_dir)
        self._fs: Any = None
        self._root = self.url
        if not _URL.match(self.url):
            self._root = str(Path(self.url).expanduser().absolute())

    # --- where things are --------------------------------------------------------------
    @property
    def is_cache(self) -> bool:
        """Whether the store is the local cache directory itself (nothing to copy)."""
        if _URL.match(self.url):
            return False
        return Path(self._root).resolve() == self.cache_dir.expanduser().resolve()

    def _filesystem(self) -> Any:
        if self._fs is None:
            if not _URL.match(self.url):
                from fsspec.implementations.local import LocalFileSystem

                self._fs = LocalFileSystem()
            else:
                try:
                    import fsspec
                except ImportError as exc:
                    raise StoreError(
                        f"the model store {self.url} needs fsspec: pip install 'prefloop[store]'"
                    ) from exc
                self._fs, self._root = fsspec.core.url_to_fs(self.url)
                self._root = self._root.rstrip("/")
        return self._fs

    def _remote(self, key: str, name: str = "") -> str:
        self._filesystem()
        path = f"{self._root}/{key}"
        return f"{path}/{name}" if name else path

    def cached_path(self, key: str) -> Path:
        return self.cache_dir / check_key(key)

    # --- publishing --------------------------------------------------------------------
    def publish(self, directory: str | Path, key: str) -> str:
        """Publish the version directory ``directory`` under ``key``; returns its spec.

        Every file goes up under a temporary name and is renamed into place, the manifest last.
        A version already published under ``key`` with the same manifest is left as it is.
        """
        source = Path(directory)
        check_key(key)
        manifest_path = source / MANIFEST
        if not manifest_path.is_file():
            raise StoreError(f"not a complete model version (no {MANIFEST}): {source}")
        manifest_bytes = manifest_path.read_bytes()
        files = _files_of(json.loads(manifest_bytes), str(source))
        if self.is_cache and source.resolve() == self.cached_path(key).resolve():
            return spec_of(key)
        fs = self._filesystem()
        if fs.exists(self._remote(key, MANIFEST)):
            if fs.cat_file(self._remote(key, MANIFEST)) == manifest_bytes:
                return spec_of(key)
            raise StoreError(f"the model store already holds a different version {key}")
        suffix = f".tmp-{uuid.uuid4().hex[:12]}"
        for name in sorted(files):
            self._put(fs, source / name, self._remote(key, name), suffix)
        self._put(fs, manifest_path, self._remote(key, MANIFEST), suffix)
        return spec_of(key)

    @staticmethod
    def _put(fs: Any, local: Path, remote: str, suffix: str) -> None:
        parent = remote.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        fs.put_file(str(local), remote + suffix)
        fs.mv(remote + suffix, remote)

    def exists(self, key: str) -> bool:
        if self.is_cache:
            return (self.cached_path(key) / MANIFEST).is_file()
        fs = self._filesystem()
        return bool(fs.exists(self._remote(check_key(key), MANIFEST)))

    def remove(self, key: str) -> None:
        """Remove a stored version (its manifest first, so it stops being complete at once)."""
        if not self.is_cache:
            fs = self._filesystem()
            remote = self._remote(check_key(key))
            if fs.exists(remote + "/" + MANIFEST):
                fs.rm_file(remote + "/" + MANIFEST)
            if fs.exists(remote):
                fs.rm(remote, recursive=True)
        shutil.rmtree(self.cached_path(key), ignore_errors=True)

    # --- fetching ----------------------------------------------------------------------
    def fetch(self, key: str) -> Path:
        """The local directory of the stored version ``key``, fetched into the cache if needed.

        Raises:
            StoreError: the store has no such version, or a file does not match its checksum
                twice in a row.
        """
        target = self.cached_path(key)
        if self.is_cache:
            if not (target / MANIFEST).is_file():
                raise StoreError(f"the model store has no version {key} (in {self.url})")
            return target
        fs = self._filesystem()
        remote_manifest = self._remote(key, MANIFEST)
        try:
            manifest_bytes = fs.cat_file(remote_manifest)
        except FileNotFoundError:
            raise StoreError(f"the model store has no version {key} (in {self.url})") from None
        if self._cache_matches(target, manifest_bytes):
            return target
        try:
            self._download(key, manifest_bytes, target)
        except StoreError:
            self._download(key, manifest_bytes, target)
        return target

    @staticmethod
    def _cache_matches(target: Path, manifest_bytes: bytes) -> bool:
        local = target / MANIFEST
        if not local.is_file() or local.read_bytes() != manifest_bytes:
            return False
        files = _files_of(json.loads(manifest_bytes), str(target))
        return all(
            (target / name).is_file() and (target / name).stat().st_size == info["bytes"]
            for name, info in files.items()
        )

    def _download(self, key: str, manifest_bytes: bytes, target: Path) -> None:
        fs = self._filesystem()
        files = _files_of(json.loads(manifest_bytes), f"{self.url}/{key}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            for name, info in sorted(files.items()):
                local = tmp / name
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(self._remote(key, name), str(local))
                if _sha256_file(local) != info.get("sha256"):
                    raise StoreError(
                        f"model store version {key}: {name} does not match its checksum "
                        "(corrupt or altered); refused"
                    )
            (tmp / MANIFEST).write_bytes(manifest_bytes)
            if self._cache_matches(target, manifest_bytes):
                return  # another reader on this machine fetched it meanwhile; theirs is in use
            if target.exists():
                stale = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not self._cache_matches(target, manifest_bytes):
                    raise
                # another reader on this machine fetched the same version first
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


_factory: Callable[[], ModelStore] | None = None


def store_from_environment() -> ModelStore:
    """The store the environment names (``PREFLOOP_MODEL_STORE``, ``PREFLOOP_VAR_DIR``)."""
    var_dir = Path(os.environ.get("PREFLOOP_VAR_DIR") or "var").expanduser()
    cache = var_dir / "models"
    return ModelStore(os.environ.get("PREFLOOP_MODEL_STORE") or cache, cache)


def set_store_factory(factory: Callable[[], ModelStore] | None) -> None:
    """Make ``current_store`` call ``factory`` (None: read the environment)."""
    global _factory
    _factory = factory


def current_store() -> ModelStore:
    return _factory() if _factory is not None else store_from_environment()


def resolve_stored(spec: str) -> Path | None:
    """The local directory of a ``store:<key>`` spec (fetched if needed); None for others."""
    key = key_of(spec)
    if key is None:
        return None
    return current_store().fetch(key)
