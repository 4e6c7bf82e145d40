"""Evaluation of a project's versions.

A rule judge on the eval prompts (`evaluate_versions`, behind ``manage.py evaluate``): paired
win rates with prompt-clustered intervals, a length-controlled win rate, length, truncation and
a KL estimate to the base. People's eval judgments (`leaderboard`): Bradley-Terry ratings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings

from annotate.errors import InvalidInput
from annotate.models import Project, Prompt, messages_hash

from ..core.data import with_system_prompt
from ..core.loading import load_model
from ..core.stats import (
    WinRate,
    length_controlled_win_rate,
    outcome,
    paired_win_rate,
)
from ..loop_settings import LoopSettings, loop_settings
from ..models import ModelVersion
from .simulation import Rule, resolve_rule
from .splits import ensure_splits
from .versions import base_version

# Samples per eval prompt and version: one sample per prompt makes the win rate
# on a dozen prompts swing by +-0.15 from sampling noise alone.
SAMPLES_PER_PROMPT = 4


class SampleCache:
    """Eval-prompt samples per version spec, so the base is sampled once per command run."""

    def __init__(self, samples_per_prompt: int = SAMPLES_PER_PROMPT) -> None:
        self.samples_per_prompt = samples_per_prompt
        self._texts: dict[tuple[str, tuple[int, ...], str], list[list[str]]] = {}

    def texts(
        self, version: ModelVersion, prompts: list[Prompt], ls: LoopSettings
    ) -> list[list[str]]:
        """``samples_per_prompt`` texts per prompt, in prompt order."""
        key = (version.spec, tuple(p.pk for p in prompts), ls.system_prompt)
        if key not in self._texts:
            # imported here to keep torch (loaded by the generation module) out of the web process
            from ..core.generation import generate

            samples = generate(
                version.spec,
                [with_system_prompt(p.messages, ls.system_prompt) for p in prompts],
                k=self.samples_per_prompt,
                temperature=ls.temperature,
                top_p=ls.top_p,
                max_new_tokens=ls.max_new_tokens,
                seed=ls.seed + 77,
                batch_size=ls.generation_batch_size,
            )
            self._texts[key] = [[sample.text for sample in row] for row in samples]
        return self._texts[key]


def eval_prompts(project: Any, limit: int) -> list[Prompt]:
    return list(
        Prompt.objects.filter(project=project, split=Prompt.Split.EVAL).order_by("pk")[:limit]
    )


def rule_win_rate_over(
    version: ModelVersion,
    opponent: ModelVersion,
    rule: Rule | str,
    prompts: list[Prompt],
    ls: LoopSettings,
    cache: SampleCache | None = None,
) -> WinRate:
    """How often ``rule`` prefers ``version``'s sample to ``opponent``'s (ties count half), with
    its prompt-clustered bootstrap 95% interval.

    Each prompt's i-th sample of one version meets the i-th sample of the other (the same
    sampling seed), so the comparisons are paired and the interval resamples prompts.
    """
    decide = resolve_rule(rule) if isinstance(rule, str) else rule
    cache = cache or SampleCache()
    new = cache.texts(version, prompts, ls)
    old = cache.texts(opponent, prompts, ls)
    verdicts = [
        [decide(p.messages, a, b) for a, b in zip(mine, theirs, strict=True)]
        for p, mine, theirs in zip(prompts, new, old, strict=True)
    ]
    return paired_win_rate(verdicts)


# --- The evaluate command: every version on the eval prompts, with intervals ------------------

# Added to each prompt's sampling seed for the KL samples, so they never repeat the judged ones.
_KL_SEED_OFFSET = 7919
_ROUND_TO = 4


def prompt_seed(messages: list[dict[str, Any]], seed: int) -> int:
    """The sampling seed of one prompt: every version samples it with the same seed."""
    digest = hashlib.sha256(f"{seed}:{messages_hash(messages)}".encode()).hexdigest()
    return int(digest[:8], 16)


def parse_version_label(label: str) -> int:
    """``base`` or ``v0`` -> 0, ``v3`` or ``3`` -> 3."""
    text = label.strip().lower()
    if text == "base":
        return 0
    digits = text[1:] if text.startswith("v") else text
    if not digits.isdigit():
        raise InvalidInput(f"version {label!r}: use base, v1, v2, ...")
    return int(digits)


def select_versions(project: Project, labels: Sequence[str] | None) -> list[ModelVersion]:
    """The versions to evaluate in version order, the base always first.

    Raises:
        InvalidInput: a label names no version of the project.
    """
    base = base_version(project)
    found = {v.number: v for v in ModelVersion.objects.filter(project=project)}
    if labels is None:
        return [found[n] for n in sorted(found)]
    numbers = {base.number}
    for label in labels:
        number = parse_version_label(label)
        if number not in found:
            known = ", ".join(found[n].label for n in sorted(found))
            raise InvalidInput(f"version {label!r} does not exist (this project has {known})")
        numbers.add(number)
    return [found[n] for n in sorted(numbers)]


@dataclass
class EvalSample:
    """One sampled completion as the evaluation stores it."""

    text: str
    token_count: int
    finished: bool
    token_ids: list[int]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalSample:
        return cls(
            text=data["text"],
            token_count=int(data["token_count"]),
            finished=bool(data["finished"]),
            token_ids=list(data["token_ids"]),
        )


class EvalCache:
    """Samples and scores on disk, one JSON file per key, so that running again is cheap.

    A key names everything its value depends on: the model version (its row id, spec and
    creation time, so a recreated project never reads a stale entry), the prompt, the seed and
    the sampling parameters. Files are written to a temporary name and renamed into place.
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, key: dict[str, Any]) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.json"

    def get(self, key: dict[str, Any]) -> Any:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            return json.loads(path.read_text())["value"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is sampled again

    def put(self, key: dict[str, Any], value: Any) -> None:
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "value": value}))
        os.replace(tmp, path)

    def samples(
        self,
        keys: list[dict[str, Any]],
        load: Callable[[], Any],
        prompts: list[list[dict[str, Any]]],
        seeds: list[int],
        keep: Callable[[Any], dict[str, Any]],
        *,
        k: int,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        batch_size: int,
    ) -> list[list[dict[str, Any]]]:
        """The kept samples under ``keys``, one list of ``k`` per prompt; the prompts without
        any are sampled ``batch_size`` sequences at a time, each with a generator of its own
        seed (``load()`` gives the model, called only then), and each forward batch is kept
        (as ``keep(sample)``) as it comes, so a stopped run keeps what it drew."""
        found: list[Any] = [self.get(key) for key in keys]
        missing = [i for i, row in enumerate(found) if row is None]
        if missing:
            # imported here to keep torch (loaded by the generation module) out of the web
            # process
            from ..core.generation import generate_seeded

            batches = generate_seeded(
                load(),
                [prompts[i] for i in missing],
                [seeds[i] for i in missing],
                k=k,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
            )
            for drawn in batches:
                for at, row in drawn.items():
                    i = missing[at]
                    found[i] = [keep(sample) for sample in row]
                    self.put(keys[i], found[i])
        return found


def eval_cache_dir(project: Project) -> Path:
    return Path(django_settings.VAR_DIR) / "eval-cache" / project.slug


def _identity(version: ModelVersion) -> str:
    return f"{version.pk}:{version.spec}:{version.created_at.isoformat()}"


class _Models:
    """One model in memory at a time, loaded when a cache miss first needs it."""

    def __init__(self) -> None:
        self._spec: str | None = None
        self._loaded: Any = None

    def get(self, version: ModelVersion) -> Any:
        if self._spec != version.spec:
            self._loaded = None  # free the previous model before loading the next
            self._loaded = load_model(version.spec)
            self._spec = version.spec
        return self._loaded


@dataclass
class _Sampling:
    """How the samples of one purpose are drawn."""

    purpose: str  # "judge" or "kl"
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed_offset: int

    def key(self, version: ModelVersion, messages: list[dict[str, Any]], seed: int) -> dict:
        return {
            "what": "samples",
            "model": _identity(version),
            "prompt": messages_hash(messages),
            "seed": seed + self.seed_offset,
            "k": self.k,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_new_tokens": self.max_new_tokens,
        }


def _samples(
    version: ModelVersion,
    prompts: list[list[dict[str, Any]]],
    seeds: list[int],
    how: _Sampling,
    cache: EvalCache,
    models: _Models,
    batch_size: int,
) -> list[list[EvalSample]]:
    """``how.k`` samples per prompt, each prompt drawn with its own seed, so a (version,
    prompt, seed) gives the same samples whatever else is evaluated with it; the prompts the
    cache lacks are sampled ``batch_size`` sequences at a time."""
    rows = cache.samples(
        [how.key(version, m, s) for m, s in zip(prompts, seeds, strict=True)],
        lambda: models.get(version),
        prompts,
        [seed + how.seed_offset for seed in seeds],
        lambda s: {
            "text": s.text,
            "token_count": s.token_count,
            "finished": s.finished,
            "token_ids": s.token_ids,
        },
        k=how.k,
        temperature=how.temperature,
        top_p=how.top_p,
        max_new_tokens=how.max_new_tokens,
        batch_size=batch_size,
    )
    return [[EvalSample.from_dict(s) for s in row] for row in rows]


def _logprobs(
    scorer: ModelVersion,
    sampled_by: ModelVersion,
    prompts: list[list[dict[str, Any]]],
    seeds: list[int],
    how: _Sampling,
    samples: list[list[EvalSample]],
    cache: EvalCache,
    models: _Models,
    batch_size: int,
) -> list[list[float]]:
    """``log pi_scorer(y | x)`` of each sample, per prompt."""
    keys = [
        {"what": "logprobs", "scorer": _identity(scorer), "of": how.key(sampled_by, m, s)}
        for m, s in zip(prompts, seeds, strict=True)
    ]
    found: list[list[float] | None] = [cache.get(key) for key in keys]
    missing = [i for i, row in enumerate(found) if row is None]
    if missing:
        # imported here to keep torch (loaded by the scoring module) out of the web process
        from ..core.scoring import sequence_logprobs

        model, tokenizer = models.get(scorer)
        flat = sequence_logprobs(
            model,
            tokenizer,
            [prompts[i] for i in missing for _ in samples[i]],
            [s.token_ids for i in missing for s in samples[i]],
            batch_size=batch_size,
        )
        at = 0
        for i in missing:
            row = flat[at : at + len(samples[i])]
            at += len(samples[i])
            cache.put(keys[i], row)
            found[i] = row
    return [row or [] for row in found]


@dataclass
class VersionEvaluation:
    """One version's numbers on the eval prompts."""

    version: ModelVersion
    over_base: WinRate | None
    over_parent: WinRate | None
    length_controlled: float | None
    kl_to_base: float | None
    mean_tokens: float
    truncated_share: float

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, _ROUND_TO)

        def ci(w: WinRate | None) -> list[float | None] | None:
            return None if w is None else [r(w.low), r(w.high)]

        return {
            "version": self.version.label,
            "state": self.version.state,
            "win_rate_over_base": r(self.over_base.rate) if self.over_base else None,
            "ci95": ci(self.over_base),
            "length_controlled_win_rate": r(self.length_controlled),
            "kl_to_base": r(self.kl_to_base),
            "mean_tokens": r(self.mean_tokens),
            "truncated_share": r(self.truncated_share),
            "win_rate_over_parent": r(self.over_parent.rate) if self.over_parent else None,
            "ci95_parent": ci(self.over_parent),
        }


@dataclass
class EvaluationReport:
    judge: str
    eval_prompts: int
    samples: int
    versions: list[VersionEvaluation]

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "eval_prompts": self.eval_prompts,
            "samples": self.samples,
            "versions": [v.to_dict() for v in self.versions],
        }

    def table(self) -> str:
        """The report as a plain-text table, one row per version."""

        def rate(w: WinRate | None) -> tuple[str, str]:
            if w is None:
                return "-", "-"
            return f"{w.rate:.2f}", f"[{w.low:.2f}, {w.high:.2f}]"

        def num(x: float | None, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)

        header = (
            f"{'version':<8} {'state':<9} {'win vs base':>11} {'95% CI':>12} "
            f"{'vs parent':>9} {'95% CI':>12} {'LC win':>6} {'KL':>7} {'tokens':>6} "
            f"{'cut off':>7}"
        )
        lines = [
            f"judge {self.judge}, {self.eval_prompts} eval prompts x {self.samples} samples",
            header,
        ]
        for v in self.versions:
            base_rate, base_ci = rate(v.over_base)
            parent_rate, parent_ci = rate(v.over_parent)
            lines.append(
                f"{v.version.label:<8} {v.version.state:<9} {base_rate:>11} {base_ci:>12} "
                f"{parent_rate:>9} {parent_ci:>12} {num(v.length_controlled, '.2f'):>6} "
                f"{num(v.kl_to_base, '.3f'):>7} {v.mean_tokens:>6.1f} "
                f"{v.truncated_share:>7.0%}"
            )
        return "\n".join(lines)


def _paired(
    rule: Rule,
    prompts: list[list[dict[str, Any]]],
    mine: list[list[EvalSample]],
    theirs: list[list[EvalSample]],
    seed: int,
) -> tuple[WinRate, list[float], list[float]]:
    """The rule's paired win rate of ``mine`` over ``theirs`` (sample i meets sample i), and
    the flat outcomes with their token-length differences."""
    verdicts = [
        [rule(messages, a.text, b.text) for a, b in zip(row_a, row_b, strict=True)]
        for messages, row_a, row_b in zip(prompts, mine, theirs, strict=True)
    ]
    outcomes = [outcome(v) for row in verdicts for v in row]
    lengths = [
        float(a.token_count - b.token_count)
        for row_a, row_b in zip(mine, theirs, strict=True)
        for a, b in zip(row_a, row_b, strict=True)
    ]
    return paired_win_rate(verdicts, seed=seed), outcomes, lengths


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate_versions(
    project: Project,
    judge: str,
    *,
    versions: Sequence[str] | None = None,
    samples: int = SAMPLES_PER_PROMPT,
    prompts: list[list[dict[str, Any]]] | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Measure versions of the project with a rule judge on the eval prompts.

    Every version samples ``samples`` completions per prompt with the project's sampling
    settings and the same seed per prompt, and each version's i-th sample meets the base's
    (and its parent's) i-th sample: the win rates are paired comparisons with prompt-clustered
    bootstrap intervals (`training.core.stats.paired_win_rate`). The length-controlled win rate
    regresses the outcomes over the base on the token-length difference
    (`training.core.stats.length_controlled_win_rate`). The KL estimate to the base is the mean
    of ``log pi_v(y|x) - log pi_base(y|x)`` over ``samples`` further completions per prompt that
    the version draws at temperature 1 without nucleus truncation, so they are draws from
    pi_v itself (a Monte Carlo estimate of KL(pi_v || pi_base) per prompt).

    Args:
        versions: labels (``base``, ``v1``, ...); all the project's versions by default. The
            base is always reported, first.
        prompts: chat prompts to use instead of the project's eval split.
        cache_dir: where samples and scores are kept between runs; None keeps nothing.
        log: called with a line of progress now and then.

    Raises:
        InvalidInput: unknown rule or version, no eval prompts, ``samples`` below 1.
    """
    rule = resolve_rule(judge)
    if samples < 1:
        raise InvalidInput("samples: must be at least 1")
    chosen = select_versions(project, versions)
    if prompts is None:
        ensure_splits(project)
        prompts = [
            p.messages
            for p in Prompt.objects.filter(project=project, split=Prompt.Split.EVAL).order_by("pk")
        ]
    if not prompts:
        raise InvalidInput("The project has no eval prompts: import prompts, or name a file.")
    say = log or (lambda line: None)
    ls = loop_settings(project)
    # every version writes in the context the project samples in: its system prompt first
    prompts = [with_system_prompt(messages, ls.system_prompt) for messages in prompts]
    base = chosen[0]
    by_pk = {v.pk: v for v in chosen}
    needed = dict(by_pk)
    for v in chosen:
        if v.parent_id is not None and v.parent_id not in needed:
            needed[v.parent_id] = ModelVersion.objects.get(pk=v.parent_id)
    judged = _Sampling("judge", samples, ls.temperature, ls.top_p, ls.max_new_tokens, 0)
    drawn = _Sampling("kl", samples, 1.0, 1.0, ls.max_new_tokens, _KL_SEED_OFFSET)
    seeds = [prompt_seed(messages, seed) for messages in prompts]
    cache = EvalCache(cache_dir)
    models = _Models()
    batch = ls.generation_batch_size

    # each version once, the base last so that it is loaded once to score every KL sample
    texts: dict[int, list[list[EvalSample]]] = {}
    own_draws: dict[int, list[list[EvalSample]]] = {}
    own_logps: dict[int, list[list[float]]] = {}
    for v in sorted(needed.values(), key=lambda v: (v.pk == base.pk, v.number)):
        say(f"{v.label}: sampling {len(prompts)} prompts x {samples}")
        texts[v.pk] = _samples(v, prompts, seeds, judged, cache, models, batch)
        if v.pk in by_pk and v.pk != base.pk:
            own_draws[v.pk] = _samples(v, prompts, seeds, drawn, cache, models, batch)
            own_logps[v.pk] = _logprobs(
                v, v, prompts, seeds, drawn, own_draws[v.pk], cache, models, batch
            )
    kl: dict[int, float] = {base.pk: 0.0}
    for pk, draws in own_draws.items():
        say(f"{by_pk[pk].label}: scoring its samples under the base")
        base_logps = _logprobs(base, by_pk[pk], prompts, seeds, drawn, draws, cache, models, batch)
        ratios = [
            mine - theirs
            for row_mine, row_theirs in zip(own_logps[pk], base_logps, strict=True)
            for mine, theirs in zip(row_mine, row_theirs, strict=True)
        ]
        kl[pk] = _mean(ratios)

    results: list[VersionEvaluation] = []
    for v in chosen:
        flat = [s for row in texts[v.pk] for s in row]
        mean_tokens = _mean([float(s.token_count) for s in flat])
        truncated = _mean([0.0 if s.finished else 1.0 for s in flat])
        if v.pk == base.pk:
            # the base meets itself with the same samples: an even match by definition
            even = WinRate(0.5, 0.5, 0.5, len(prompts), len(flat))
            results.append(VersionEvaluation(v, even, None, 0.5, 0.0, mean_tokens, truncated))
            continue
        over_base, outcomes, lengths = _paired(rule, prompts, texts[v.pk], texts[base.pk], seed)
        over_parent = None
        if v.parent_id is not None:
            over_parent = _paired(rule, prompts, texts[v.pk], texts[v.parent_id], seed)[0]
        results.append(
            VersionEvaluation(
                version=v,
                over_base=over_base,
                over_parent=over_parent,
                length_controlled=length_controlled_win_rate(outcomes, lengths),
                kl_to_base=kl[v.pk],
                mean_tokens=mean_tokens,
                truncated_share=truncated,
            )
        )
    return EvaluationReport(judge, len(prompts), samples, results)
