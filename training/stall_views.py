"""The lead's ways out of a stalled round: release leases, lower the target, train on what is
judged (after a confirmation page that says how many pairs).

Each view: the lead check, one service call, a message, back to the loop page.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotate.access import project_for
from annotate.errors import NotFound, ServiceError
from annotate.models import Project

from .models import Round
from .services import stall
from .services.generation import get_round


def _round(request: HttpRequest, project_id: int, round_id: int) -> tuple[Project, Round]:
    project = project_for(request, project_id, lead=True)
    try:
        return project, get_round(project, round_id)
    except NotFound:
        raise Http404("No such round.") from None


@login_required
@require_POST
def release_leases(request: HttpRequest, project_id: int, round_id: int) -> HttpResponse:
    project, loop_round = _round(request, project_id, round_id)
    try:
        released = stall.release_leases(loop_round)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            f"Released {released} lease{'s' if released != 1 else ''}: "
            "those pairs are offered again.",
        )
    return redirect("loop", project_id=project.pk)


@login_required
@require_POST
def lower_target(request: HttpRequest, project_id: int, round_id: int) -> HttpResponse:
    project, loop_round = _round(request, project_id, round_id)
    target = request.POST.get("min_pairs")
    try:
        started = stall.lower_target(loop_round, target)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request,
            "Training queued: the round reached its new target."
            if started
            else f"Round {loop_round.number} trains once {target} of its train pairs are judged.",
        )
    return redirect("loop", project_id=project.pk)


@login_required
@require_http_methods(["GET", "POST"])
def train_judged(request: HttpRequest, project_id: int, round_id: int) -> HttpResponse:
    """GET: how many pairs training would use, and a button to confirm; POST: train."""
    project, loop_round = _round(request, project_id, round_id)
    if request.method == "POST":
        try:
            run = stall.train_on_judged(loop_round, request.POST.get("pairs"))
        except ServiceError as exc:
            messages.error(request, exc.message)
            if loop_round.state == Round.State.COLLECTING:
                return redirect("loop-train-judged", project_id=project.pk, round_id=round_id)
        else:
            messages.success(request, f"Training queued on {run.num_pairs} pairs.")
        return redirect("loop", project_id=project.pk)
    analysis = stall.round_stall(loop_round)
    if analysis is None:
        messages.error(
            request,
            f"Round {loop_round.number} is {loop_round.get_state_display().lower()}.",
        )
        return redirect("loop", project_id=project.pk)
    context = {
        "project": project,
        "round": loop_round,
        "stall": analysis,
        "pairs": stall.judged_pairs(loop_round),
    }
    return render(request, "training/stall_confirm.html", context)
