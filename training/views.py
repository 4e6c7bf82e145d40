"""The lead's pages for the loop: rounds live, history plots and actions.

Every view: access check, at most one service call, render or redirect. The page polls its
status partial while a round is open; the plots come from ``training.plots``.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotate.access import project_for
from annotate.errors import ServiceError
from annotate.models import Project

from . import services
from .loop_settings import LoopSettings
from .models import ModelVersion, ProjectLoop, Round
from .plots import Plot, cached_loop_plots
from .services.leaderboard import LeaderboardEntry
from .services.leaderboard import leaderboard as rate_versions
from .services.project_settings import update_loop_settings


def _status_context(project: Project) -> dict[str, Any]:
    loop_round = services.current_round(project)
    run = loop_round.latest_run() if loop_round is not None else None
    collecting = None
    if loop_round is not None and loop_round.state == Round.State.COLLECTING:
        collecting = services.collecting_progress(loop_round)
    new_version = None
    if loop_round is not None and loop_round.state == Round.State.EVALUATING:
        new_version = ModelVersion.objects.filter(trained_in=loop_round).first()
    return {
        "project": project,
        "round": loop_round,
        "run": run,
        # the evaluating round's gate, to show how far a waiting human gate is
        "gate": new_version.gate if new_version is not None else {},
        "run_lost": run is not None and run.is_lost(),
        "collecting": collecting,
        "serving": services.serving_version(project),
        "polling": loop_round is not None and loop_round.is_open,
        "plots": cached_loop_plots(project, loop_round, run),
    }


def _leaderboard_plot(entries: list[LeaderboardEntry]) -> dict[str, Any]:
    """Each rated version's rating with its 95% interval, by version number."""
    return Plot(
        "Leaderboard: rating with 95% interval",
        [
            {
                "label": "rating (base = 1000)",
                "cls": "s1",
                "points": [(e.number, e.rating) for e in entries],
            }
        ],
        bars=[{"x": e.number, "low": e.low, "high": e.high, "y": e.rating} for e in entries],
        x_label="version",
    ).scaled()


@login_required
@require_GET
def loop(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    context = _status_context(project)
    ls = services.loop_settings(project)
    loop_row = ProjectLoop.of(project)
    leaderboard = rate_versions(project)
    context.update(
        leaderboard=leaderboard,
        leaderboard_plot=_leaderboard_plot(leaderboard) if leaderboard else None,
        rounds=Round.objects.filter(project=project)
        .select_related("policy", "new_version")
        .order_by("-number"),
        versions=ModelVersion.objects.filter(project=project).order_by("-number"),
        base_model=loop_row.base_model,
        settings_json=json.dumps(loop_row.settings or {}, indent=2),
        defaults_json=json.dumps(LoopSettings().to_dict(), indent=2),
        trigger=ls.trigger,
        serve_port=settings.PREFLOOP_SERVE_PORT,
    )
    return render(request, "training/loop.html", context)


@login_required
@require_GET
def loop_status(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    context = _status_context(project)
    if not getattr(request, "htmx", False):
        return redirect("loop", project_id=project.pk)
    return render(request, "training/loop.html#status", context)


def _act(request: HttpRequest, project_id: int, action: Any, done: str) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    try:
        action(project)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("loop", project_id=project_id)


@login_required
@require_POST
def round_start(request: HttpRequest, project_id: int) -> HttpResponse:
    return _act(request, project_id, services.start_round, "Round started: sampling completions.")


@login_required
@require_POST
def round_train(request: HttpRequest, project_id: int, round_id: int) -> HttpResponse:
    return _act(
        request,
        project_id,
        lambda p: services.begin_training(services.get_round(p, round_id)),
        "Training queued.",
    )


@login_required
@require_POST
def round_retry(request: HttpRequest, project_id: int, round_id: int) -> HttpResponse:
    return _act(
        request,
        project_id,
        lambda p: services.retry(services.get_round(p, round_id)),
        "Retry queued.",
    )


@login_required
@require_POST
def version_promote(request: HttpRequest, project_id: int, version_id: int) -> HttpResponse:
    return _act(
        request,
        project_id,
        lambda p: services.promote(services.get_version(p, version_id)),
        "Serving version changed.",
    )


@login_required
@require_POST
def loop_settings(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    try:
        update_loop_settings(
            project,
            base_model=request.POST.get("base_model", ProjectLoop.of(project).base_model),
            loop_settings=request.POST.get("loop_settings") or "{}",
        )
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Loop settings saved; they apply from the next round.")
    return redirect("loop", project_id=project.pk)
