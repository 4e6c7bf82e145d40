"""torch.compile for the training passes: none, each decoder layer, or the whole backbone.

``layers`` compiles every decoder layer in place (``nn.Module.compile``): the layers share one
code path, so dynamo traces one graph and reuses it for all of them, compiling in seconds; a
new sequence length recompiles that one small graph at most once, since shapes are marked
dynamic. ``model`` compiles the backbone's forward as one graph, which lets the compiler fuse
across layers at the price of a much longer compile. Both compile in place, so the state dict
keeps its names and the version is saved exactly as without compilation. The LM head is not
compiled: the chunked log-probs project only completion positions, a few at a time (see
`logprobs.label_logprobs`).

Compilation applies to the training passes only; reference and held-out log-probs are computed
before it, in eager mode, so the numbers a version is judged by do not depend on it.
"""

from __future__ import annotations

from typing import Any

from .config import COMPILE_BACKENDS, COMPILE_MODES
from .logprobs import unwrap


def backbone(model: Any) -> Any:
    """The decoder stack that `logprobs.completion_logps` runs (the model without its head)."""
    core = unwrap(model)
    return getattr(core, core.base_model_prefix)


def decoder_layers(model: Any) -> list[Any]:
    """The backbone's decoder layers, in order."""
    layers = getattr(backbone(model), "layers", None)
    if layers is None:
        raise ValueError(
            f"{type(unwrap(model)).__name__} has no decoder layers under "
            f"'{unwrap(model).base_model_prefix}.layers': use compile='model'"
        )
    return list(layers)


def compile_model(model: Any, mode: str, backend: str = "inductor") -> list[Any]:
    """Compile ``model``'s training forward in place under ``mode``; returns what was compiled.

    Raises:
        ValueError: an unknown mode or backend, or "layers" on a model without decoder layers.
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, not {mode!r}")
    if backend not in COMPILE_BACKENDS:
        raise ValueError(
            f"compile_backend must be one of {', '.join(COMPILE_BACKENDS)}, not {backend!r}"
        )
    if mode == "none":
        return []
    modules = decoder_layers(model) if mode == "layers" else [backbone(model)]
    for module in modules:
        module.compile(backend=backend, dynamic=True)
    return modules


def uncompile(modules: list[Any]) -> None:
    """Return ``modules`` (what `compile_model` gave) to their eager forward."""
    for module in modules:
        module._compiled_call_impl = None


def is_compiled(module: Any) -> bool:
    """Whether ``module`` runs through a compiled forward (set by ``nn.Module.compile``)."""
    return getattr(module, "_compiled_call_impl", None) is not None
