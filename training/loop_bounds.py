"""Upper and lower bounds on a project's loop settings and DPO options.

One lead's settings run on the worker every project shares, so each number has a ceiling: a
round of ``prompts_per_round=10**9`` or ``dpo.epochs=10**9`` would hold the train queue for
everyone. The limits are generous (well past what a single-GPU round of a small model needs)
and documented in the API schema through :func:`schema_bounds`. Light: standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

from django.core.exceptions import ValidationError

from .core.config import CHECKPOINTING, CHOICES, DPOConfig

# (minimum, maximum) of each numeric loop setting; None: no bound on that side.
LOOP_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "prompts_per_round": (1, 100_000),
    "k": (2, 64),
    "pairs_per_prompt": (1, 2016),  # every pair of 64 completions
    "max_new_tokens": (1, 32_768),
    "temperature": (0.0, 10.0),
    "seed": (0, 2**31 - 1),
    "min_pairs": (1, 1_000_000),
    "generation_batch_size": (1, 1024),
    "gate_samples": (1, 100),
    "human_gate_comparisons": (1, 100_000),
    "gate_max_chosen_logp_drop": (0.0, 100.0),
}
# Longest free-text loop settings, in characters.
LOOP_TEXT_LIMITS = {"system_prompt": 4000, "gate_judge": 500}

# (minimum, maximum) of each numeric DPOConfig field a lead may set. Fields the training core
# adds later are type-checked from their declaration and bounded here once listed.
DPO_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "beta": (1e-6, 100.0),
    "epsilon": (0.0, 0.5),
    "learning_rate": (1e-12, 1.0),
    "lora_learning_rate": (1e-12, 1.0),
    "weight_decay": (0.0, 10.0),
    "warmup_ratio": (0.0, 1.0),
    "max_grad_norm": (0.0, 10_000.0),
    "epochs": (1, 1000),
    "max_steps": (1, 1_000_000),
    "batch_size": (1, 1024),
    "grad_accum_steps": (1, 1024),
    "max_length": (8, 32_768),
    "max_prompt_length": (1, 32_768),
    "lora_r": (1, 1024),
    "lora_alpha": (1, 4096),
    "lora_dropout": (0.0, 1.0),
    "seed": (0, 2**31 - 1),
    "heldout_fraction": (0.0, 1.0),
    "eval_batch_size": (1, 1024),
    "num_processes": (1, 64),
    "processes": (1, 64),
}
DPO_TEXT_LIMIT = 200
DPO_LIST_LIMIT = 64
# torch device names a lead may pick; which GPUs exist is the worker's business, the web
# process only checks the form and that the index is plausible.
MAX_CUDA_INDEX = 63
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:(0|[1-9][0-9]?))?)$")


def _device_ok(value: str) -> bool:
    match = _DEVICE.match(value)
    if match is None:
        return False
    return match[3] is None or int(match[3]) <= MAX_CUDA_INDEX


def check_number(where: str, value: Any, bounds: tuple[float | None, float | None]) -> None:
    low, high = bounds
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{where}: must be a finite number")
    if low is not None and value < low:
        raise ValidationError(f"{where}: must be at least {low}")
    if high is not None and value > high:
        raise ValidationError(f"{where}: must be at most {high}")


def check_loop_bounds(merged: dict[str, Any]) -> None:
    """Every loop setting within its bounds; raises ValidationError naming the first that is not."""
    for name, value in merged.items():
        if isinstance(value, float):
            check_number(name, value, (None, None))
    for name, bounds in LOOP_BOUNDS.items():
        check_number(name, merged[name], bounds)
    for name, limit in LOOP_TEXT_LIMITS.items():
        if len(merged[name]) > limit:
            raise ValidationError(f"{name}: must be at most {limit} characters")


def _declared(name: str) -> Any:
    hints = typing.get_type_hints(DPOConfig)
    return hints.get(name)


def _matches(value: Any, declared: Any) -> bool:
    """Whether a JSON value fits a DPOConfig field's declared type (int, float, bool, str,
    list[str], optionals of those); an unknown declaration is left to the config itself."""
    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(declared))
    if declared is type(None):
        return value is None
    if declared is bool:
        return isinstance(value, bool)
    if declared is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if declared is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if declared is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(declared) or (Any,)
        return isinstance(value, list) and all(item is Any or _matches(v, item) for v in value)
    return True


def _type_name(declared: Any) -> str:
    names = {int: "integer", float: "number", bool: "boolean", str: "string"}
    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(declared))
    if declared is type(None):
        return "null"
    if origin is list:
        return "list of strings"
    return names.get(declared, str(declared))


def check_dpo_fields(data: dict[str, Any]) -> None:
    """Types and bounds of the DPO options a lead wrote; unknown names are left to DPOConfig."""
    for name, value in data.items():
        declared = _declared(name)
        if declared is None:
            continue
        where = f"dpo.{name}"
        if not _matches(value, declared):
            raise ValidationError(f"{where}: expected {_type_name(declared)}, got {value!r}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            check_number(where, value, DPO_BOUNDS.get(name, (None, None)))
        if isinstance(value, str) and len(value) > DPO_TEXT_LIMIT:
            raise ValidationError(f"{where}: must be at most {DPO_TEXT_LIMIT} characters")
        if isinstance(value, list):
            if len(value) > DPO_LIST_LIMIT:
                raise ValidationError(f"{where}: must list at most {DPO_LIST_LIMIT} items")
            if any(len(v) > DPO_TEXT_LIMIT for v in value if isinstance(v, str)):
                raise ValidationError(f"{where}: items must be at most {DPO_TEXT_LIMIT} characters")
    if "device" in data and not _device_ok(str(data["device"])):
        raise ValidationError(
            f'dpo.device: must be "auto", "cpu", "mps", "cuda" or "cuda:N" with N at most '
            f"{MAX_CUDA_INDEX}, not {data['device']!r}"
        )


def _json_type(declared: Any) -> dict[str, Any]:
    names = {int: "integer", float: "number", bool: "boolean", str: "string"}
    origin = typing.get_origin(declared)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(declared) if a is not type(None)]
        inner = _json_type(args[0]) if len(args) == 1 else {}
        return {**inner, "nullable": True} if inner else {}
    if origin is list:
        return {"type": "array", "items": {"type": "string"}, "maxItems": DPO_LIST_LIMIT}
    if declared in names:
        return {"type": names[declared]}
    return {}


def _bounds_schema(bounds: tuple[float | None, float | None]) -> dict[str, Any]:
    low, high = bounds
    out: dict[str, Any] = {}
    if low is not None:
        out["minimum"] = low
    if high is not None:
        out["maximum"] = high
    return out


def loop_schema_bounds(name: str) -> dict[str, Any]:
    """minimum/maximum (or maxLength) of a loop setting, for its JSON schema."""
    if name in LOOP_TEXT_LIMITS:
        return {"maxLength": LOOP_TEXT_LIMITS[name]}
    return _bounds_schema(LOOP_BOUNDS.get(name, (None, None)))


def dpo_schema() -> dict[str, Any]:
    """The JSON schema of ``dpo``: each DPOConfig field with its type, default and bounds."""
    hints = typing.get_type_hints(DPOConfig)
    defaults = DPOConfig().to_dict()
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(DPOConfig):
        prop = {**_json_type(hints[f.name]), "default": defaults[f.name]}
        if prop.get("type") in ("integer", "number"):
            prop.update(_bounds_schema(DPO_BOUNDS.get(f.name, (None, None))))
        if prop.get("type") == "string":
            prop["maxLength"] = DPO_TEXT_LIMIT
        properties[f.name] = prop
    if "device" in properties:
        properties["device"]["pattern"] = _DEVICE.pattern
    if "gradient_checkpointing" in properties:
        # a choice, or true / false for "full" / "none"
        properties["gradient_checkpointing"]["oneOf"] = [
            {"type": "string", "enum": list(CHECKPOINTING)},
            {"type": "boolean"},
        ]
    if "epsilon" in properties:
        properties["epsilon"]["exclusiveMaximum"] = True  # [0, 0.5), as DPOConfig checks
    # the choices DPOConfig checks
    for name, allowed in CHOICES.items():
        if properties.get(name, {}).get("type") == "string":
            properties[name]["enum"] = list(allowed)
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "description": "DPOConfig fields that differ from the core's defaults",
    }
