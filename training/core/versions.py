"""Model versions on disk: a directory that is either complete or absent.

Layout of a version directory::

    config.json, model.safetensors       full weights (kind "full"), or
    adapter_config.json,
    adapter_model.safetensors            a LoRA adapter over ``base_model`` (kind "lora")
    tokenizer files
    training_config.json                 the DPOConfig of the run
    metrics.json                         what the run measured
    prefloop_version.json                the manifest, written last: its presence marks completeness

Everything is written into a hidden temporary directory beside the target, fsynced, and renamed
into place, so a crash leaves at most a ``.name.tmp-*`` directory that never loads as a version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import DPOConfig
from .loading import MANIFEST, _fsync_tree, load_model

FORMAT_VERSION = 1


class IncompleteVersionError(RuntimeError):
    """A directory that is not a complete model version."""


@dataclass
class SavedVersion:
    """What a version directory says about itself (weights are loaded on demand)."""

    path: Path
    kind: str  # "full" or "lora"
    base_model: str | None  # the model a LoRA adapter applies to, or the model trained from
    config: DPOConfig | None
    metrics: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)

    def load_model(self, device: str | None = "auto") -> tuple[Any, Any]:
        """``(model, tokenizer)`` of this version, LoRA merged into its base."""
        return load_model(self.path, device=device)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_version(
    out_dir: str | Path,
    model: Any,
    tokenizer: Any,
    *,
    config: DPOConfig | dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    base_model: str | None = None,
) -> Path:
    """Write a model version atomically and return its path.

    Args:
        out_dir: where the version will appear; must not exist yet.
        model: a transformers model (full weights) or a PEFT model (only the adapter is saved).
        tokenizer: saved beside the weights so the version is self-contained.
        config: the training config, stored as ``training_config.json``.
        metrics: JSON-ready run metrics, stored as ``metrics.json``.
        base_model: spec of the model the run started from; required for LoRA versions, whose
            adapter is applied over it when loading.

    Raises:
        FileExistsError: ``out_dir`` exists.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists():
        raise FileExistsError(f"model version already exists: {out}")
    is_lora = hasattr(model, "peft_config")
    if is_lora and not base_model:
        raise ValueError("a LoRA version needs base_model")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_dict = config.to_dict() if isinstance(config, DPOConfig) else (config or {})
        _write_json(tmp / "training_config.json", config_dict)
        _write_json(tmp / "metrics.json", metrics or {})
        files = {
            str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        _write_json(
            tmp / MANIFEST,
            {
                "format": FORMAT_VERSION,
                "kind": "lora" if is_lora else "full",
                "base_model": base_model,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files,
            },
        )
        _fsync_tree(tmp)
        os.rename(tmp, out)
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load_version(path: str | Path, verify: bool = False) -> SavedVersion:
    """Read a version directory's manifest, config and metrics.

    Args:
        path: the version directory.
        verify: also check every file's size and SHA-256 against the manifest.

    Raises:
        IncompleteVersionError: no manifest, or (with ``verify``) a file is missing or altered.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise IncompleteVersionError(f"not a complete model version (no {MANIFEST}): {root}")
    manifest = json.loads(manifest_path.read_text())
    for name, info in manifest.get("files", {}).items():
        file = root / name
        if not file.is_file() or file.stat().st_size != info["bytes"]:
            raise IncompleteVersionError(f"{root}: {name} is missing or has the wrong size")
        if verify and _sha256(file) != info["sha256"]:
            raise IncompleteVersionError(f"{root}: {name} does not match its checksum")
    config_data = json.loads((root / "training_config.json").read_text())
    return SavedVersion(
        path=root,
        kind=manifest["kind"],
        base_model=manifest.get("base_model"),
        config=DPOConfig.from_dict(config_data) if config_data else None,
        metrics=json.loads((root / "metrics.json").read_text()),
        manifest=manifest,
    )
