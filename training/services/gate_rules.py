"""The gate's rules: the criterion a win rate must meet, which gate a round gets, the dev-prompt
samples, the simulated judge's verdict and the held-out pair checks. ``gate`` decides rounds
with them; ``human_gate`` asks people."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.db import transaction

from annotate.errors import InvalidInput
from annotate.models import Project, Prompt

from ..core.data import with_system_prompt
from ..core.loading import load_model
from ..core.stats import WinRate, paired_win_rate
from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round
from .evaluation import EvalCache, eval_cache_dir, prompt_seed
from .simulation import Sample, resolve_rule
from .splits import ensure_splits

log = logging.getLogger(__name__)

# The gate samples at most this many dev prompts, the first by id, so every round meets the
# same ones: 100 prompts x 4 samples bound a win rate's 95% interval to about +-0.05 at worst,
# and keep a gate to a few hundred samples per version on a CPU.
DEV_PROMPTS_MAX = 100
# A decision on a bootstrap interval needs at least this many prompts: resampling 4 prompts
# that all went one way gives a point interval, though 4 fair coins land alike 1 time in 8.
MIN_PROMPTS = 5

WAITING = "waiting"
PROMOTED = "promoted"
REJECTED = "rejected"


# --- The criterion ---------------------------------------------------------------------------


def decide(rate: WinRate, ls: LoopSettings) -> tuple[bool, str]:
    """Whether the candidate's win rate over the serving version earns promotion, and why.

    Both must hold:

    1. ``rate >= gate_min_win_rate`` (0.5 by default): the judge prefers the candidate at least
       as often as the serving version. A version worse by construction (trained on flipped
       labels) falls below 0.5 here, however narrow or wide its interval.
    2. ``low >= gate_min_win_rate - gate_margin`` (0.4 by default), where ``low`` is the lower
       end of the rate's 95% prompt-clustered bootstrap interval: a non-inferiority test that
       rules out, with 97.5% confidence, a candidate worse by more than the margin. A rate
       above 0.5 from a handful of prompts has a wide interval and does not promote.

    Not asked: ``low >= 0.5``, a significant gain. One round trains on a few dozen pairs and
    moves the model a little; demanding significance would reject most real gains and stall
    the loop. A rejected round costs little, as the next one trains on its pairs again
    (``replay_share``), so the gate may be strict about "worse" and lenient about "better".
    """
    floor = ls.gate_min_win_rate - ls.gate_margin
    text = f"win rate {rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}]"
    if rate.rate < ls.gate_min_win_rate:
        return False, f"{text} is below the required {ls.gate_min_win_rate:.2f}"
    if rate.low < floor:
        return False, (
            f"{text}: the interval's lower end is below {floor:.2f}, too little evidence "
            f"that the candidate is not worse (more dev prompts or samples narrow it)"
        )
    return True, f"{text} meets {ls.gate_min_win_rate:.2f} with lower end at least {floor:.2f}"


def gate_numbers(rate: WinRate) -> dict[str, Any]:
    return {
        "win_rate": round(rate.rate, 4),
        "ci95": [round(rate.low, 4), round(rate.high, 4)],
        "prompts": rate.prompts,
        "comparisons": rate.comparisons,
    }


def gate_criterion(ls: LoopSettings) -> dict[str, float]:
    return {"min_win_rate": ls.gate_min_win_rate, "margin": ls.gate_margin}


# --- Which gate ------------------------------------------------------------------------------


def dev_prompts(project: Project) -> list[Prompt]:
    """The project's dev prompts the gate uses, the same every round."""
    ensure_splits(project)
    return list(
        Prompt.objects.filter(project=project, split=Prompt.Split.DEV).order_by("pk")[
            :DEV_PROMPTS_MAX
        ]
    )


def gate_mode_of(ls: LoopSettings, prompts: list[Prompt]) -> str:
    """The gate a round runs: ``auto`` resolved to ``simulated`` or ``heldout``."""
    if ls.gate_mode != "auto":
        return ls.gate_mode
    return "simulated" if ls.gate_judge and len(prompts) >= MIN_PROMPTS else "heldout"


def use_gate_judge(loop_round: Round, rule: str) -> None:
    """Let ``rule`` judge the round's gate unless the project's settings name a judge.

    ``run_rounds --simulate <rule>`` calls this for each round it runs; the rule is written
    into the round's settings, so the gate (in this process or a worker) and the round's page
    both know which judge decided.
    """
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=loop_round.pk)
        if locked.settings.get("gate_judge"):
            return
        locked.settings = {**locked.settings, "gate_judge": rule}
        locked.save(update_fields=["settings"])
    loop_round.settings = locked.settings


# --- Sampling the dev prompts ----------------------------------------------------------------


def dev_samples(
    version: ModelVersion, prompts: list[Prompt], samples: int, ls: LoopSettings
) -> list[list[dict[str, Any]]]:
    """``samples`` samples per dev prompt from ``version``, each prompt with its own seed.

    Every version samples a prompt with the same seed, so two versions with equal weights
    draw equal texts. Samples are kept in the project's eval cache: the serving version was
    the previous round's candidate, and its samples are read back rather than drawn again.
    """
    cache = EvalCache(eval_cache_dir(version.project))
    seeds = [prompt_seed(prompt.messages, ls.seed) for prompt in prompts]
    keys = [
        {
            "what": "gate-samples",
            "model": f"{version.pk}:{version.spec}:{version.created_at.isoformat()}",
            "prompt": prompt.pk,
            "seed": seed,
            "k": samples,
            "temperature": ls.temperature,
            "top_p": ls.top_p,
            "max_new_tokens": ls.max_new_tokens,
            "system_prompt": ls.system_prompt,
        }
        for prompt, seed in zip(prompts, seeds, strict=True)
    ]
    return cache.samples(
        keys,
        lambda: load_model(version.spec),
        [with_system_prompt(prompt.messages, ls.system_prompt) for prompt in prompts],
        seeds,
        lambda s: {"text": s.text, "token_count": s.token_count, "logprob": s.logprob},
        k=samples,
        temperature=ls.temperature,
        top_p=ls.top_p,
        max_new_tokens=ls.max_new_tokens,
        batch_size=ls.generation_batch_size,
    )


# --- The simulated gate ----------------------------------------------------------------------


def simulated_gate(
    version: ModelVersion, opponent: ModelVersion, prompts: list[Prompt], ls: LoopSettings
) -> dict[str, Any]:
    """The rule judge's paired win rate of ``version`` over ``opponent`` on the dev prompts,
    and the decision on it."""
    gate: dict[str, Any] = {
        "mode": "simulated",
        "judge": ls.gate_judge,
        "opponent": opponent.label,
        "criterion": gate_criterion(ls),
    }
    try:
        rule = resolve_rule(ls.gate_judge) if ls.gate_judge else None
    except InvalidInput as exc:
        return refused(gate, f"gate_judge: {exc.message}")
    if rule is None:
        return refused(
            gate,
            "gate_mode simulated needs a judge: set gate_judge, or run the round with "
            "`run_rounds --simulate <rule>`",
        )
    if len(prompts) < MIN_PROMPTS:
        return refused(gate, too_few_dev_prompts(len(prompts)))
    mine = dev_samples(version, prompts, ls.gate_samples, ls)
    theirs = dev_samples(opponent, prompts, ls.gate_samples, ls)
    verdicts = [
        [
            rule(
                prompt.messages,
                Sample(a["text"], a["token_count"]),
                Sample(b["text"], b["token_count"]),
            )
            for a, b in zip(row_a, row_b, strict=True)
        ]
        for prompt, row_a, row_b in zip(prompts, mine, theirs, strict=True)
    ]
    rate = paired_win_rate(verdicts)
    passed, reason = decide(rate, ls)
    return {
        **gate,
        **gate_numbers(rate),
        "samples": ls.gate_samples,
        "passed": passed,
        "decision": PROMOTED if passed else REJECTED,
        "reasons": [f"{reason} (judge {ls.gate_judge}, over {opponent.label} on dev prompts)"],
    }


def refused(gate: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**gate, "passed": False, "decision": REJECTED, "reasons": [reason]}


def too_few_dev_prompts(n: int) -> str:
    return (
        f"judging text needs at least {MIN_PROMPTS} dev prompts and the project has {n}: "
        f'import prompts with "split": "dev"'
    )


# --- The held-out pair checks ----------------------------------------------------------------


def _noise_margin(p_before: float, p_after: float, n: int) -> float:
    """1.96 standard errors of the difference of two accuracies measured on ``n`` pairs.

    A round's held-out split is small (a tenth of a few dozen pairs), so a drop of a pair
    or two is noise, not a regression; with many held-out pairs the margin shrinks to 0.
    """
    if n <= 0:
        return 0.0
    variance = (p_before * (1 - p_before) + p_after * (1 - p_after)) / n
    return 1.96 * math.sqrt(variance)


def heldout_check(version: ModelVersion, ls: LoopSettings) -> dict[str, Any]:
    """Compare the new version with its parent on the round's held-out pairs."""
    before = version.heldout("before")
    after = version.heldout("after")
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    gate: dict[str, Any] = {"mode": "heldout"}
    if not before or not after:
        reason = "no held-out pairs: the gate had nothing to check"
        return {**gate, "passed": True, "decision": PROMOTED, "reasons": [reason]}
    acc_before, acc_after = before["reward_accuracy"], after["reward_accuracy"]
    allowed = ls.gate_accuracy_tolerance + _noise_margin(
        acc_before, acc_after, int(version.metrics.get("num_heldout_pairs") or 0)
    )
    checks["reward_accuracy"] = {"before": acc_before, "after": acc_after, "allowed_drop": allowed}
    if acc_after < acc_before - allowed:
        reasons.append(
            f"held-out reward accuracy fell from {acc_before:.2f} to {acc_after:.2f} "
            f"(more than the {allowed:.2f} that sampling noise and the tolerance allow)"
        )
    lp_before, lp_after = before["chosen_logp"], after["chosen_logp"]
    checks["chosen_logp"] = {"before": lp_before, "after": lp_after}
    floor = lp_before - ls.gate_max_chosen_logp_drop * abs(lp_before)
    if lp_after < floor:
        reasons.append(
            f"held-out chosen log-prob collapsed from {lp_before:.1f} to {lp_after:.1f} "
            f"(limit {floor:.1f})"
        )
    passed = not reasons
    return {
        **gate,
        "passed": passed,
        "decision": PROMOTED if passed else REJECTED,
        "reasons": reasons or ["held-out reward accuracy and chosen log-prob held up"],
        "checks": checks,
    }
