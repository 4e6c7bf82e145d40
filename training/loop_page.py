"""What the loop page shows, read once per request so its parts never disagree.

The page's live part (current round, plots, rounds, versions, leaderboard) is one partial drawn
from the one ``live_state`` below: the rounds table's newest row and the current-round card are
the same row, and the serving version is the one the versions table marks serving. ``step``
names where the loop stands, and the page offers that step's action as its primary one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from annotate.models import Project

from . import services
from .loop_settings import LoopSettings
from .models import ModelVersion, Round, TrainingRun
from .plots import cached_loop_plots, history_key, leaderboard_plot
from .services.leaderboard import leaderboard as rate_versions

# Seconds between polls of the live partial: quick while a round moves, slow while the loop
# waits for the lead (a promotion or a round started through the API still shows up).
POLL_OPEN, POLL_IDLE = 2, 10


@dataclass
class VersionRow:
    version: ModelVersion
    # "rollback" / "serve" (a version that served before), "promote" (trained, never decided),
    # or "" (serving now, rejected, or its round still deciding).
    action: str

    @property
    def served(self) -> bool:
        """Served at some time: the base, or promoted once (a rejected version never is)."""
        return self.version.number == 0 or self.version.promoted_at is not None


def version_rows(versions: list[ModelVersion], serving: ModelVersion) -> list[VersionRow]:
    rows = []
    for v in versions:
        served = v.number == 0 or v.promoted_at is not None
        if v.pk == serving.pk or v.state == ModelVersion.State.REJECTED:
            action = ""
        elif served:
            action = "rollback" if v.number < serving.number else "serve"
        elif v.trained_in is not None and v.trained_in.is_open:
            action = ""  # its gate is still deciding
        else:
            action = "promote"
        rows.append(VersionRow(v, action))
    return rows


def step_of(loop_round: Round | None, run: TrainingRun | None, gate: dict[str, Any]) -> str:
    """Where the loop stands, for the lead: the name of the next thing to do or wait for."""
    if loop_round is None:
        return "start"
    if loop_round.state == Round.State.FAILED or (run is not None and run.is_lost()):
        return "failed"
    if loop_round.state == Round.State.EVALUATING and gate.get("decision") == "waiting":
        return "gate_waiting"
    return str(loop_round.state)


def train_offer(loop_round: Round) -> dict[str, Any]:
    """What "Train now" would train on: the round's own pairs with a majority and the replayed
    ones, with the round's judgments against its target."""
    pairs, replayed = services.round_pairs(loop_round, LoopSettings.from_dict(loop_round.settings))
    done, total = services.collecting_progress(loop_round)
    return {
        "pairs": len(pairs),
        "own": len(pairs) - replayed,
        "replayed": replayed,
        "judged": done,
        "target": total,
        "below_target": done < total,
    }


def cached_leaderboard(key: str, project: Project) -> tuple[list[Any], dict[str, Any] | None]:
    """The leaderboard and its plot, computed again only when the history changes (the
    ratings move with the eval judgments and versions the history plots are drawn from)."""
    key = f"{key}:leaderboard"
    hit = cache.get(key)
    if hit is None:
        entries = rate_versions(project)
        hit = (entries, leaderboard_plot(entries) if entries else None)
        cache.set(key, hit, 600)
    return hit


def _gate_floor(gate: dict[str, Any]) -> float | None:
    criterion = gate.get("criterion") or {}
    if "min_win_rate" not in criterion:
        return None
    return float(criterion["min_win_rate"]) - float(criterion.get("margin", 0.0))


def live_state(project: Project) -> dict[str, Any]:
    serving = services.serving_version(project)  # creates the base version on first use
    rounds = list(
        Round.objects.filter(project=project)
        .select_related("policy", "new_version")
        .order_by("-number")
    )
    current = rounds[0] if rounds else None
    versions = list(
        ModelVersion.objects.filter(project=project)
        .select_related("parent", "trained_in")
        .order_by("-number")
    )
    serving = next((v for v in versions if v.state == ModelVersion.State.SERVING), serving)
    run = current.latest_run() if current is not None else None
    new_version = getattr(current, "new_version", None) if current is not None else None
    if new_version is not None:
        new_version = next((v for v in versions if v.pk == new_version.pk), new_version)
    gate = new_version.gate if new_version is not None else {}
    step = step_of(current, run, gate)
    ls = LoopSettings.from_dict(current.settings if current is not None else {})
    collecting = offer = None
    if step == "collecting" and current is not None:
        offer = train_offer(current)
        collecting = (offer["judged"], offer["target"])
    leaderboard, board_plot = cached_leaderboard(history_key(project), project)
    return {
        "project": project,
        "round": current,
        "run": run,
        "run_lost": run is not None and run.is_lost(),
        "step": step,
        "gate": gate,
        "gate_floor": _gate_floor(gate),
        "new_version": new_version,
        "collecting": collecting,
        "offer": offer,
        "round_settings": ls,
        "serving": serving,
        "rounds": rounds,
        "version_rows": version_rows(versions, serving),
        "poll_seconds": POLL_OPEN if current is not None and current.is_open else POLL_IDLE,
        "plots": cached_loop_plots(project, current, run),
        "leaderboard": leaderboard,
        "leaderboard_plot": board_plot,
    }
