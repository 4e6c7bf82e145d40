"""The human gate: the candidate's and the serving version's dev-prompt samples go to people
as eval comparisons of the round, and their judgments give the win rate that decides."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from django.db import transaction

from annotate.models import Comparison, Completion, Judgment, Prompt, content_random_key

from ..core.stats import bootstrap_win_rate, outcome
from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round
from .evaluation import prompt_seed
from .gate_rules import (
    MIN_PROMPTS,
    PROMOTED,
    REJECTED,
    WAITING,
    decide,
    dev_samples,
    gate_criterion,
    gate_numbers,
    refused,
    too_few_dev_prompts,
)

# --- The human gate --------------------------------------------------------------------------


def gate_comparisons(loop_round: Round, version: ModelVersion) -> Any:
    """The human gate's comparisons: the candidate (side A) against the serving version."""
    return Comparison.objects.filter(
        project_id=loop_round.project_id,
        round=loop_round.number,
        kind=Comparison.Kind.EVAL,
        completion_a__model_version_id=version.pk,
    )


def _completion(
    prompt: Prompt, sample: dict[str, Any], version: ModelVersion, ls: LoopSettings
) -> Completion:
    return Completion.objects.create(
        prompt=prompt,
        text=sample["text"],
        source=Completion.Source.MODEL,
        model_version_id=version.pk,
        generation_params={
            "version": version.label,
            "temperature": ls.temperature,
            "top_p": ls.top_p,
            "max_new_tokens": ls.max_new_tokens,
            "seed": prompt_seed(prompt.messages, ls.seed),
            "purpose": "gate",
        },
        token_count=sample["token_count"],
        logprob=sample["logprob"],
    )


def open_human_gate(
    loop_round: Round,
    version: ModelVersion,
    opponent: ModelVersion,
    prompts: list[Prompt],
    ls: LoopSettings,
) -> dict[str, Any] | None:
    """Sample the human gate's comparisons and store them with the waiting gate.

    ``human_gate_comparisons`` (M) slots are spread over the dev prompts in turn, each
    prompt sampled ``ceil(M / prompts)`` times by both versions with the same seeds. A slot
    where both versions wrote the same text is a tie by construction: it is not shown to
    people and counts as a tie in the win rate. Returns the gate to conclude at once (nothing
    to show, or too few dev prompts), or None once the gate waits for people.
    """
    gate: dict[str, Any] = {
        "mode": "human",
        "opponent": opponent.label,
        "opponent_id": opponent.pk,
        "criterion": gate_criterion(ls),
    }
    if len(prompts) < MIN_PROMPTS:
        return refused(gate, too_few_dev_prompts(len(prompts)))
    wanted = ls.human_gate_comparisons
    per_prompt = math.ceil(wanted / len(prompts))
    mine = dev_samples(version, prompts, per_prompt, ls)
    theirs = dev_samples(opponent, prompts, per_prompt, ls)
    slots = [(i, j) for j in range(per_prompt) for i in range(len(prompts))][:wanted]
    shown = [(i, j) for i, j in slots if mine[i][j]["text"].strip() != theirs[i][j]["text"].strip()]
    identical: dict[str, int] = defaultdict(int)
    for i, j in slots:
        if (i, j) not in shown:
            identical[str(prompts[i].pk)] += 1
    gate.update(needed=len(shown), judged=0, identical=dict(identical))
    if not shown:
        return human_decision(gate, {}, ls)
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=loop_round.pk)
        if locked.state != Round.State.EVALUATING or gate_comparisons(locked, version).exists():
            return None  # another delivery opened it
        for i, j in shown:
            a = _completion(prompts[i], mine[i][j], version, ls)
            b = _completion(prompts[i], theirs[i][j], opponent, ls)
            Comparison.objects.create(
                project_id=locked.project_id,
                prompt=prompts[i],
                completion_a=a,
                completion_b=b,
                round=locked.number,
                kind=Comparison.Kind.EVAL,
                random_key=content_random_key(
                    prompts[i].content_hash, a.text, b.text, locked.number
                ),
            )
        version.gate = {
            **gate,
            "passed": None,
            "decision": WAITING,
            "reasons": [
                f"waiting for people to judge {len(shown)} comparisons of {version.label} "
                f"against {opponent.label} on dev prompts"
            ],
        }
        version.save(update_fields=["gate"])
    return None


def people_outcomes(comparisons: Any, first_version_id: int) -> dict[int, list[float]]:
    """People's outcomes for ``first_version_id``'s side per prompt (ties and both-bad half).

    Every judgment counts once; simulated annotators' judgments are left out.
    """
    rows = (
        Judgment.objects.filter(comparison__in=comparisons)
        .exclude(source=Judgment.Source.SIMULATED)
        .values_list(
            "comparison__prompt_id", "choice", "comparison__completion_a__model_version_id"
        )
        .order_by("pk")
    )
    by_prompt: dict[int, list[float]] = defaultdict(list)
    for prompt_id, choice, a_version in rows:
        verdict = choice if choice in (Judgment.Choice.A, Judgment.Choice.B) else "tie"
        score = outcome(verdict)
        by_prompt[prompt_id].append(score if a_version == first_version_id else 1.0 - score)
    return by_prompt


def human_decision(
    gate: dict[str, Any], by_prompt: dict[int, list[float]], ls: LoopSettings
) -> dict[str, Any]:
    clusters = {pk: list(scores) for pk, scores in by_prompt.items()}
    for pk, n in gate.get("identical", {}).items():
        clusters.setdefault(int(pk), []).extend([0.5] * n)
    rate = bootstrap_win_rate(list(clusters.values()))
    passed, reason = decide(rate, ls)
    return {
        **gate,
        **gate_numbers(rate),
        "passed": passed,
        "decision": PROMOTED if passed else REJECTED,
        "reasons": [f"{reason} (people's judgments over {gate['opponent']} on dev prompts)"],
    }
