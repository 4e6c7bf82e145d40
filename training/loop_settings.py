"""A project's round settings for the online-DPO loop and its base model, and their validation.

Stored as JSON in ``ProjectLoop.settings``; missing keys take the defaults below. The training
app reads a project's settings and base model only through ``loop_settings`` and
``base_model_of``, so their storage can move without touching the callers. This module
must stay light (no torch), because the web process validates settings on every PATCH of a
project; the core's ``config`` module it uses needs only the standard library.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from .core.config import DPOConfig
from .core.pairing import PAIRING_STRATEGIES
from .engine_settings import DEFAULT_BACKEND, backend_schema, validate_generation_backend
from .loop_bounds import check_dpo_fields, check_loop_bounds, dpo_schema, loop_schema_bounds
from .model_roots import check_base_model
from .models import ProjectLoop

if TYPE_CHECKING:
    from annotate.models import Project

TRIGGERS = ("all_judged", "min_pairs", "manual")
TIE_POLICIES = ("drop", "weak")
MAX_SYSTEM_PROMPT = 4000
GATE_MODES = ("auto", "simulated", "human", "off")
# "auto" picks one of the core's strategies per round, see ``LoopSettings.pairing``.
PAIRING_CHOICES = ("auto", *PAIRING_STRATEGIES)


@dataclass
class LoopSettings:
    """How each round of a project's loop generates, collects, trains and gates."""

    # Train-split prompts drawn for a round, without repeats until the pool is used up.
    prompts_per_round: int = 16
    # Completions sampled per prompt by the serving version.
    k: int = 2
    # Comparisons made from one prompt's k completions (distinct texts only).
    pairs_per_prompt: int = 1
    # Which of a prompt's k completions are compared; the lead's choice per project:
    # "random" (any two distinct texts, the unbiased choice that suits people),
    # "most_different" (the pair whose word sets differ the most, for a clearer preference),
    # "best_vs_worst" (a simulated judge scores all k, the best meets the worst; only rounds
    # run by `run_rounds --simulate` have such a judge, a round sampled by the worker fails) or
    # "auto" (the default): "best_vs_worst" in a round sampled with a simulated judge at hand
    # (`run_rounds --simulate`, in process), "random" otherwise (the rounds people judge, and
    # `--via-worker`). With k=2 and one pair a prompt, every strategy makes the same pair.
    pairing: str = "auto"
    # Sampling temperature; 0 is greedy, which gives identical samples and so no pairs.
    temperature: float = 0.8
    # Nucleus sampling mass.
    top_p: float = 0.95
    # Cap on generated tokens per completion.
    max_new_tokens: int = 128
    # A system message put before each prompt when the round samples (prompts that bring their
    # own system message keep it), and before the same prompt when the pairs are trained, so the
    # policy learns from the context it wrote in. Empty: none. A request for brief answers keeps
    # completions inside max_new_tokens (cut-off completions are weaker training data).
    system_prompt: str = ""
    # Sampler seed; the round number is added so rounds do not repeat each other's samples.
    seed: int = 0
    # When training starts: "all_judged" (every comparison of the round judged by the project's
    # overlap), "min_pairs" (at least `min_pairs` train comparisons judged) or "manual" (a lead's
    # click only).
    trigger: str = "all_judged"
    # Judged train comparisons that fire the "min_pairs" trigger.
    min_pairs: int = 32
    # Start round n+1 by itself once round n's version is promoted.
    auto_next_round: bool = True
    # Share of the earlier rounds' train pairs trained on again with this round's: 1 trains
    # on all data so far (iterative DPO from v(n-1) against the base reference, as in Xiong
    # et al. 2024), so a later round does not forget what earlier rounds taught; 0 trains on
    # this round's pairs only.
    replay_share: float = 1.0
    # Tie and both-bad judgments: under either policy a side must beat them to win a pair (one A
    # vote and two ties is no pair); then "drop" leaves them out of the majority's agreement,
    # "weak" counts each as half a vote for both sides, so they dilute it (and the loss weight
    # and soft label, see below).
    ties: str = "drop"
    # Use the majority's share of the votes as the pair's loss weight instead of 1.
    agreement_weight: bool = False
    # Soft labels (conservative DPO, Mitchell 2023): each pair's label smoothing is the
    # minority's vote share (by the `ties` policy), so a 2-1 vote trains towards 2/3 rather than
    # certainty. Off by default: with one vote per pair it changes nothing, and it needs the
    # sigmoid loss.
    soft_labels: bool = False
    # Share of each round's comparisons that pit the serving version against the previous one
    # and the base on eval prompts; those are never trained on.
    eval_share: float = 0.2
    # How a trained version (the candidate) earns promotion over the serving version:
    # "simulated" (a rule judge, `gate_judge`, prefers the candidate's samples on the project's
    # dev prompts, by the win-rate criterion below), "human" (the round waits in "evaluating"
    # until people have judged `human_gate_comparisons` comparisons of the candidate against
    # the serving version on dev prompts, then the same criterion decides), "off" (promote
    # every trained version), or "auto": "simulated" when a judge is known (`gate_judge`, or
    # the rule of `run_rounds --simulate`) and the project has dev prompts, else the held-out
    # pair checks below, which need neither a judge nor people.
    gate_mode: str = "auto"
    # The simulated gate's judge, a rule as for `run_rounds --simulate` (contains:<word>,
    # regex:<pattern>, a dotted path, ...); empty: `run_rounds --simulate` lends its own rule.
    gate_judge: str = ""
    # Samples per dev prompt and version that the simulated gate judges, drawn with the same
    # seed for both versions; 4 samples on 30 dev prompts bound the 95% interval of a win rate
    # near 0.5 to about +-0.1 at worst, less with ties.
    gate_samples: int = 4
    # Promotion needs the candidate's win rate over the serving version (a tie counts half) to
    # reach this: 0.5 = the judge prefers it at least as often as the serving version.
    gate_min_win_rate: float = 0.5
    # ...and the lower end of the rate's 95% interval no further than this below
    # `gate_min_win_rate` (a non-inferiority test): 0.1 rules out, with 97.5% confidence, that
    # the candidate is worse by more than 0.1, and keeps a few lucky prompts from promoting it.
    gate_margin: float = 0.1
    # Comparisons people judge before the human gate decides; with 50 and no ties the 95%
    # interval spans about +-0.14, so the human gate promotes from a win rate near 0.54.
    human_gate_comparisons: int = 50
    # Roll a promoted version back to its parent when the next round's human eval judgments
    # show it significantly worse (the upper end of the 95% interval of its win rate over the
    # parent below 0.5), checked when that round's collection closes; that round then ends
    # without training. Off by default: it needs people judging the eval comparisons.
    auto_rollback: bool = False
    # The held-out pair checks ("auto" without a judge): the new version's held-out reward
    # accuracy (ties count half) may trail the previous version's by at most this much beyond
    # sampling noise (1.96 standard errors on the round's held-out pairs); 0 = it must be at
    # least as good up to noise.
    gate_accuracy_tolerance: float = 0.0
    # Held-out check: largest allowed fall of the held-out chosen log-prob, as a fraction of
    # its magnitude (0.5: from -40 to below -60 nats is a collapse).
    gate_max_chosen_logp_drop: float = 0.5
    # Sequences per forward pass when sampling.
    generation_batch_size: int = 8
    # Where rounds sample: {"kind": "hf"} (the built-in sampler in the generate worker) or
    # {"kind": "openai", "base_url": ..., "model": ...} (an OpenAI-compatible serving engine;
    # see ``engine_settings``).
    generation_backend: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_BACKEND))
    # DPOConfig fields that differ from the training core's defaults (reference, beta, ...).
    dpo: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pairing_strategy(self, judge_at_hand: bool) -> str:
        """The core pairing strategy a round uses: ``pairing``, with "auto" resolved by whether
        a simulated judge can score the round's samples."""
        if self.pairing != "auto":
            return self.pairing
        return "best_vs_worst" if judge_at_hand else "random"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LoopSettings:
        """Settings from stored JSON; raises ValidationError naming the bad field."""
        return cls(**validate_loop_settings(data or {}))


def loop_settings(project: Project) -> LoopSettings:
    """The project's loop settings, defaults filled in."""
    return LoopSettings.from_dict(ProjectLoop.of(project).settings)


def base_model_of(project: Project) -> str:
    """The spec of the model the project's loop starts from; the demo model when unset."""
    return ProjectLoop.of(project).base_model or "demo"


_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object"}


def json_schema() -> dict[str, Any]:
    """The OpenAPI/JSON schema of stored loop settings: every key, its type, default, bounds
    (see ``loop_bounds``) and the values a choice allows (the API documents ``loop_settings``
    with it)."""
    choices = {
        "trigger": TRIGGERS,
        "ties": TIE_POLICIES,
        "pairing": PAIRING_CHOICES,
        "gate_mode": GATE_MODES,
    }
    defaults = LoopSettings().to_dict()
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(LoopSettings):
        prop: dict[str, Any] = {
            "type": _JSON_TYPES[type(defaults[f.name])],
            "default": defaults[f.name],
        }
        if f.name in choices:
            prop["enum"] = list(choices[f.name])
        if f.name in _POSITIVE_INTS:
            prop["minimum"] = 1
        if f.name in _FRACTIONS:
            prop.update(minimum=0.0, maximum=1.0)
        if f.name == "eval_share":
            # [0, 1): a round of eval prompts only has nothing to train on
            prop.update(minimum=0.0, maximum=1.0, exclusiveMaximum=True)
        prop.update(loop_schema_bounds(f.name))
        if prop["type"] == "string" and "enum" not in prop:
            prop["pattern"] = NO_NUL
        properties[f.name] = prop
    properties["dpo"] = {**dpo_schema(), "default": {}}
    properties["generation_backend"] = backend_schema()
    return {"type": "object", "additionalProperties": False, "properties": properties}


_POSITIVE_INTS = (
    "prompts_per_round",
    "k",
    "pairs_per_prompt",
    "max_new_tokens",
    "min_pairs",
    "generation_batch_size",
    "gate_samples",
    "human_gate_comparisons",
)
_FRACTIONS = (
    "replay_share",
    "gate_accuracy_tolerance",
    "top_p",
    "gate_min_win_rate",
    "gate_margin",
)


def _type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def validate_dpo(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationError("dpo: must be an object of DPOConfig fields")
    check_dpo_fields(data)
    try:
        DPOConfig.from_dict(dict(data))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"dpo: {exc}") from None
    return dict(data)


# PostgreSQL stores a NUL character in no text or JSON column
NO_NUL = r"^[^\u0000]*$"


def _refuse_nul(value: Any, where: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError(f"{where}: must not hold a NUL character")
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(str(key), where)
            _refuse_nul(item, f"{where}.{key}")
    if isinstance(value, list):
        for item in value:
            _refuse_nul(item, where)


def validate_loop_settings(data: Any) -> dict[str, Any]:
    """Check stored loop settings; returns them as keyword arguments for LoopSettings.

    Raises:
        ValidationError: with a message that names the offending key.
    """
    if not isinstance(data, dict):
        raise ValidationError("loop settings must be a JSON object")
    for name, value in data.items():
        _refuse_nul(str(name), "loop settings")
        _refuse_nul(value, str(name))
    names = {f.name for f in dataclasses.fields(LoopSettings)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValidationError(f"unknown loop setting(s): {', '.join(unknown)}")
    defaults = LoopSettings()
    out: dict[str, Any] = {}
    for name, value in data.items():
        expected = type(getattr(defaults, name))
        if not _type_ok(value, expected):
            raise ValidationError(f"{name}: expected {expected.__name__}, got {value!r}")
        out[name] = float(value) if expected is float else value
    merged = {**defaults.to_dict(), **out}
    for name in _POSITIVE_INTS:
        if merged[name] < 1:
            raise ValidationError(f"{name}: must be at least 1")
    for name in _FRACTIONS:
        if not 0.0 <= merged[name] <= 1.0:
            raise ValidationError(f"{name}: must lie between 0 and 1")
    if merged["k"] < 2:
        raise ValidationError("k: at least 2 completions per prompt are needed to make a pair")
    if not 0.0 <= merged["eval_share"] < 1.0:
        raise ValidationError("eval_share: must lie in [0, 1)")
    if merged["temperature"] < 0:
        raise ValidationError("temperature: must not be negative")
    if merged["gate_max_chosen_logp_drop"] < 0:
        raise ValidationError("gate_max_chosen_logp_drop: must not be negative")
    if merged["trigger"] not in TRIGGERS:
        raise ValidationError(f"trigger: must be one of {', '.join(TRIGGERS)}")
    if merged["pairing"] not in PAIRING_CHOICES:
        raise ValidationError(f"pairing: must be one of {', '.join(PAIRING_CHOICES)}")
    if len(merged["system_prompt"]) > MAX_SYSTEM_PROMPT:
        raise ValidationError(f"system_prompt: must be at most {MAX_SYSTEM_PROMPT} characters")
    if merged["gate_mode"] not in GATE_MODES:
        raise ValidationError(f"gate_mode: must be one of {', '.join(GATE_MODES)}")
    if merged["ties"] not in TIE_POLICIES:
        raise ValidationError(f"ties: must be one of {', '.join(TIE_POLICIES)}")
    check_loop_bounds(merged)
    if "dpo" in out:
        out["dpo"] = validate_dpo(out["dpo"])
    if "generation_backend" in out:
        out["generation_backend"] = validate_generation_backend(out["generation_backend"])
    loss = DPOConfig.from_dict(dict(merged["dpo"])).loss
    if merged["soft_labels"] and loss != "sigmoid":
        raise ValidationError(f"soft_labels: needs the sigmoid loss, not dpo.loss {loss!r}")
    return out


def clean_loop_settings(data: Any) -> dict[str, Any]:
    """Loop settings as a lead wrote them, once they validate (stored as given).

    A lead's ``gate_judge`` is checked further by
    ``training.services.project_settings.clean_lead_settings``.
    """
    validate_loop_settings(data)
    return dict(data)


def clean_base_model(spec: Any) -> str:
    """A base model spec once it validates; see :func:`validate_base_model`."""
    if isinstance(spec, str) and len(spec) > 500:
        raise ValidationError("base_model: must be at most 500 characters")
    validate_base_model(spec)
    text: str = spec
    return text


def validate_base_model(spec: Any) -> None:
    """A base model spec must be "demo", or a model the server allows (``model_roots``)."""
    if not isinstance(spec, str):
        raise ValidationError("base_model: must be a string")
    text = spec.strip()
    if not text or text == "demo":
        return
    check_base_model(text)
