"""The gate: a round's new version (the candidate) against the serving version; promote it,
reject it, or wait for people; and the roll-back of a promoted version that people find worse.

How a candidate is judged is the round's ``gate_mode`` (see `gate_mode_of`):

- ``simulated``: a rule judge compares the candidate's samples with the serving version's on
  the project's dev prompts (drawn once, never trained on), both sampled with the same seed
  per prompt, so the i-th samples of the two versions meet on equal terms; the paired win rate
  with its prompt-clustered bootstrap interval then decides (`decide`).
- ``human``: the same comparisons go to people as eval comparisons; the round waits in
  "evaluating" until ``human_gate_comparisons`` of them are judged (re-checked after every
  judgment and by the beat, `check_human_gate`), and the people's win rate decides.
- ``heldout``: what ``auto`` falls back to without a judge or dev prompts: the held-out pair
  checks of the training run (`heldout_check`).
- ``off``: every trained version is promoted.

With ``auto_rollback``, a promoted version is rolled back to its parent when the next round's
human eval judgments show it significantly worse (`roll_back_if_worse`).

Every decision, with its numbers and interval, is stored on the version (``ModelVersion.gate``);
a promoted round starts the next one by itself when the project's settings ask for it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput
from annotate.models import Comparison, Judgment, Project

from ..core.stats import bootstrap_win_rate
from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round
from . import dispatch
from .gate_rules import (
    MIN_PROMPTS,
    PROMOTED,
    REJECTED,
    WAITING,
    decide,
    dev_prompts,
    gate_mode_of,
    gate_numbers,
    heldout_check,
    refused,
    simulated_gate,
    too_few_dev_prompts,
)
from .generation import start_round
from .human_gate import gate_comparisons, human_decision, open_human_gate, people_outcomes
from .versions import promote, serving_version

__all__ = [
    "check_human_gate",
    "decide",
    "evaluate_round",
    "gate_mode_of",
    "heldout_check",
    "roll_back_if_worse",
]


log = logging.getLogger(__name__)


# The gate samples at most this many dev prompts, the first by id, so every round meets the
# same ones: 100 prompts x 4 samples bound a win rate's 95% interval to about +-0.05 at worst,
# and keep a gate to a few hundred samples per version on a CPU.
def check_human_gate(round_id: int) -> bool:
    """Decide a waiting human gate once its comparisons are judged; True when it decided.

    A comparison counts as judged once a person has judged it; every person's judgment then
    counts in the win rate. Until then the count of judged comparisons is kept on the gate.
    """
    with transaction.atomic():
        loop_round = Round.objects.select_for_update().filter(pk=round_id).first()
        if loop_round is None or loop_round.state != Round.State.EVALUATING:
            return False
        version = ModelVersion.objects.filter(trained_in=loop_round).first()
        if version is None or version.gate.get("decision") != WAITING:
            return False
        comparisons = gate_comparisons(loop_round, version)
        by_prompt = people_outcomes(comparisons, version.pk)
        judged = (
            Judgment.objects.filter(comparison__in=comparisons)
            .exclude(source=Judgment.Source.SIMULATED)
            .values("comparison_id")
            .distinct()
            .count()
        )
        gate = dict(version.gate)
        if judged < gate["needed"]:
            if judged != gate.get("judged"):
                version.gate = {**gate, "judged": judged}
                version.save(update_fields=["gate"])
            return False
        ls = LoopSettings.from_dict(loop_round.settings)
        _conclude(loop_round, version, human_decision({**gate, "judged": judged}, by_prompt, ls))
    return True


# --- Deciding a round ------------------------------------------------------------------------


def _conclude(loop_round: Round, version: ModelVersion, gate: dict[str, Any]) -> None:
    """Store the gate on the version and promote or reject it (the caller holds the round's
    row lock)."""
    version.gate = gate
    version.save(update_fields=["gate"])
    if gate["passed"]:
        promote(version)
        loop_round.state = Round.State.PROMOTED
        loop_round.error = ""
    else:
        version.state = ModelVersion.State.REJECTED
        version.save(update_fields=["state"])
        loop_round.state = Round.State.REJECTED
        loop_round.error = "; ".join(gate["reasons"])
    loop_round.finished_at = timezone.now()
    loop_round.save(update_fields=["state", "error", "finished_at", "updated_at"])
    if gate["passed"] and LoopSettings.from_dict(loop_round.settings).auto_next_round:
        project_id = loop_round.project_id
        dispatch.on_commit(lambda: _start_next_round(project_id))


def _gate(loop_round: Round, version: ModelVersion, ls: LoopSettings) -> dict[str, Any] | None:
    """The gate's result, or None when it waits for people (sampling happens here)."""
    prompts = dev_prompts(loop_round.project)
    mode = gate_mode_of(ls, prompts)
    if mode == "off":
        return {"mode": "off", "passed": True, "decision": PROMOTED, "reasons": ["gate off"]}
    if mode == "heldout":
        gate = heldout_check(version, ls)
        if ls.gate_judge:  # auto with a judge: say why it did not judge
            gate["reasons"] = [too_few_dev_prompts(len(prompts)), *gate["reasons"]]
        return gate
    opponent = serving_version(loop_round.project)
    try:
        if mode == "human":
            return open_human_gate(loop_round, version, opponent, prompts, ls)
        return simulated_gate(version, opponent, prompts, ls)
    except Exception as exc:  # a model that fails to load or sample must not hang the round
        log.exception("gate of %s failed", version)
        return refused({"mode": mode}, f"the gate could not sample the dev prompts: {exc}")


def evaluate_round(round_id: int) -> str:
    """Gate the round's new version: promote it, reject it, or open the human gate.

    Sampling the dev prompts happens outside any transaction; the decision is written under
    the round's row lock, once per round, however often this runs.
    """
    loop_round = Round.objects.select_related("project").get(pk=round_id)
    if loop_round.state != Round.State.EVALUATING:
        return f"skipped: round is {loop_round.state}"
    version = ModelVersion.objects.get(trained_in=loop_round)
    if version.gate.get("decision") == WAITING:
        check_human_gate(round_id)
        return Round.objects.get(pk=round_id).state
    ls = LoopSettings.from_dict(loop_round.settings)
    gate = _gate(loop_round, version, ls)
    if gate is None:
        check_human_gate(round_id)  # people may have judged already (a redelivered task)
        return Round.objects.get(pk=round_id).state
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=round_id)
        if locked.state != Round.State.EVALUATING:
            return f"skipped: round is {locked.state}"
        version.refresh_from_db()
        if version.gate.get("decision") in (PROMOTED, REJECTED, WAITING):
            return locked.state
        _conclude(locked, version, gate)
    return locked.state


# --- Rolling back ----------------------------------------------------------------------------


def roll_back_if_worse(loop_round: Round) -> str | None:
    """With ``auto_rollback``: restore the parent when people find the round's policy worse.

    Called when the round's collection closes. The round's eval comparisons pit its policy
    (promoted by the previous round) against its parent; when people's win rate of the policy
    over the parent has a 95% interval entirely below 0.5 (over at least ``MIN_PROMPTS``
    prompts), the parent serves again, the policy is marked rejected, and the round ends
    without training, its pairs drawn from the rolled-back version (later rounds still replay
    them). The check and its numbers are stored on the policy's gate either way.

    Returns:
        Why the round was closed, or None when it goes on to training.
    """
    ls = LoopSettings.from_dict(loop_round.settings)
    if not ls.auto_rollback:
        return None
    with transaction.atomic():
        locked = Round.objects.select_for_update().select_related("policy").get(pk=loop_round.pk)
        policy = locked.policy
        if locked.state != Round.State.COLLECTING or policy.parent_id is None:
            return None
        if policy.state != ModelVersion.State.SERVING:
            return None  # a lead changed the serving version meanwhile
        parent = ModelVersion.objects.get(pk=policy.parent_id)
        comparisons = Comparison.objects.filter(
            project_id=locked.project_id, round=locked.number, kind=Comparison.Kind.EVAL
        ).filter(
            completion_a__model_version_id__in=[policy.pk, parent.pk],
            completion_b__model_version_id__in=[policy.pk, parent.pk],
        )
        by_prompt = people_outcomes(comparisons, policy.pk)
        if len(by_prompt) < MIN_PROMPTS:
            return None
        rate = bootstrap_win_rate(list(by_prompt.values()))
        worse = rate.high < 0.5
        check = {
            **gate_numbers(rate),
            "round": locked.number,
            "opponent": parent.label,
            "rolled_back": worse,
        }
        policy.gate = {**policy.gate, "rollback": check}
        policy.save(update_fields=["gate"])
        if not worse:
            return None
        promote(parent)
        policy.state = ModelVersion.State.REJECTED
        policy.save(update_fields=["state"])
        message = (
            f"{policy.label} rolled back to {parent.label}: people's win rate of "
            f"{policy.label} over {parent.label} is {rate.rate:.2f} "
            f"[{rate.low:.2f}, {rate.high:.2f}], significantly below 0.5; round "
            f"{locked.number} ends without training"
        )
        locked.state = Round.State.REJECTED
        locked.error = message
        locked.finished_at = timezone.now()
        locked.save(update_fields=["state", "error", "finished_at", "updated_at"])
        if ls.auto_next_round:
            project_id = locked.project_id
            dispatch.on_commit(lambda: _start_next_round(project_id))
    return message


def _start_next_round(project_id: int) -> None:
    project = Project.objects.get(pk=project_id)
    try:
        start_round(project)
    except (Conflict, InvalidInput) as exc:
        log.info("next round of %s not started: %s", project.slug, exc)
