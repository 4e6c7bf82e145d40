"""Programmatic evaluation: a rule's win rate of one version over another on eval prompts."""

from __future__ import annotations

from typing import Any

from annotate.models import Prompt

from ..loop_settings import LoopSettings
from ..models import ModelVersion
from .simulation import Rule, resolve_rule, rule_win_rate

# Samples per eval prompt and version: one sample per prompt makes the win rate
# on a dozen prompts swing by +-0.15 from sampling noise alone.
SAMPLES_PER_PROMPT = 4


class SampleCache:
    """Eval-prompt samples per version spec, so the base is sampled once per command run."""

    def __init__(self, samples_per_prompt: int = SAMPLES_PER_PROMPT) -> None:
        self.samples_per_prompt = samples_per_prompt
        self._texts: dict[tuple[str, tuple[int, ...]], list[list[str]]] = {}

    def texts(
        self, version: ModelVersion, prompts: list[Prompt], ls: LoopSettings
    ) -> list[list[str]]:
        """``samples_per_prompt`` texts per prompt, in prompt order."""
        key = (version.spec, tuple(p.pk for p in prompts))
        if key not in self._texts:
            # imported here to keep torch (loaded by the generation module) out of the web process
            from ..core.generation import generate

            samples = generate(
                version.spec,
                [p.messages for p in prompts],
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
) -> float:
    """How often ``rule`` prefers ``version``'s sample to ``opponent``'s (ties count half).

    Each prompt's i-th sample of one version meets the i-th sample of the other.
    """
    decide = resolve_rule(rule) if isinstance(rule, str) else rule
    cache = cache or SampleCache()
    new = cache.texts(version, prompts, ls)
    old = cache.texts(opponent, prompts, ls)
    messages = [p.messages for p, row in zip(prompts, new, strict=True) for _ in row]
    flat_new = [text for row in new for text in row]
    flat_old = [text for row in old for text in row]
    return rule_win_rate(decide, messages, flat_new, flat_old)
