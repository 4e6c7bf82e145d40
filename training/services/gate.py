"""The gate: a round's new version against its parent on held-out pairs; promote or reject.

A promoted round starts the next one by itself when the project's settings ask for it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput
from annotate.models import Project

from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round
from . import dispatch
from .generation import start_round
from .versions import promote

log = logging.getLogger(__name__)


def _noise_margin(p_before: float, p_after: float, n: int) -> float:
    """1.96 standard errors of the difference of two accuracies measured on ``n`` pairs.

    A round's held-out split is small (a tenth of a few dozen pairs), so a drop of a pair
    or two is noise, not a regression; with many held-out pairs the margin shrinks to 0.
    """
    if n <= 0:
        return 0.0
    variance = (p_before * (1 - p_before) + p_after * (1 - p_after)) / n
    return 1.96 * math.sqrt(variance)


def gate_check(version: ModelVersion, ls: LoopSettings) -> dict[str, Any]:
    """Compare the new version with its parent on the round's held-out pairs."""
    before = version.heldout("before")
    after = version.heldout("after")
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    if not before or not after:
        return {"passed": True, "reasons": ["no held-out pairs: the gate had nothing to check"]}
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
    return {"passed": not reasons, "reasons": reasons, "checks": checks}


def evaluate_round(round_id: int) -> str:
    """Gate the round's new version; promote it or keep it for inspection. Once per round."""
    with transaction.atomic():
        loop_round = Round.objects.select_for_update().select_related("project").get(pk=round_id)
        if loop_round.state != Round.State.EVALUATING:
            return f"skipped: round is {loop_round.state}"
        version = ModelVersion.objects.get(trained_in=loop_round)
        ls = LoopSettings.from_dict(loop_round.settings)
        gate = gate_check(version, ls)
        if not ls.gate:
            gate["passed"] = True
            gate["reasons"] = ["gate turned off", *gate.get("reasons", [])]
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
        if gate["passed"] and ls.auto_next_round:
            project_id = loop_round.project_id
            dispatch.on_commit(lambda: _start_next_round(project_id))
    return loop_round.state


def _start_next_round(project_id: int) -> None:
    project = Project.objects.get(pk=project_id)
    try:
        start_round(project)
    except (Conflict, InvalidInput) as exc:
        log.info("next round of %s not started: %s", project.slug, exc)
