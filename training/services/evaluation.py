"""Programmatic evaluation: a rule's win rate of one version over another on eval prompts."""

from __future__ import annotations

from typing import Any

from annotate.models import Prompt

from ..loop_settings import LoopSettings
from ..models import ModelVersion
from .simulation import Rule, resolve_rule, rule_win_rate


class SampleCache:
    """Eval-prompt samples per version spec, so the base is sampled once per command run."""

    def __init__(self) -> None:
        self._texts: dict[tuple[str, tuple[int, ...]], list[str]] = {}

    def texts(self, version: ModelVersion, prompts: list[Prompt], ls: LoopSettings) -> list[str]:
        key = (version.spec, tuple(p.pk for p in prompts))
        if key not in self._texts:
            from training.core import generate

            samples = generate(
                version.spec,
                [p.messages for p in prompts],
                k=1,
                temperature=ls.temperature,
                top_p=ls.top_p,
                max_new_tokens=ls.max_new_tokens,
                seed=ls.seed + 77,
                batch_size=ls.generation_batch_size,
            )
            self._texts[key] = [row[0].text for row in samples]
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
) -> float:
    """How often ``rule`` prefers ``version``'s sample to ``opponent``'s (ties count half)."""
    decide = resolve_rule(rule) if isinstance(rule, str) else rule
    cache = cache or SampleCache()
    new = cache.texts(version, prompts, ls)
    old = cache.texts(opponent, prompts, ls)
    return rule_win_rate(decide, [p.messages for p in prompts], new, old)
