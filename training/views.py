"""The lead's pages for the loop: rounds live, history plots and actions.

Every view: access check, at most one service call, render or redirect. The page polls one
partial (``loop_status``) that holds everything that changes as the loop runs, drawn from one
read of the loop's state (``training.loop_page``), so its parts never disagree.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotate.access import project_for
from annotate.errors import Conflict, InvalidInput, ServiceError
from annotate.models import Project

from . import services, settings_form
from .loop_page import live_state, train_offer
from .models import ModelVersion, ProjectLoop, Round
from .services.project_settings import update_loop_settings


def _page(
    request: HttpRequest,
    project: Project,
    *,
    form: list[settings_form.Field] | None = None,
    base_model: str | None = None,
    form_errors: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    loop_row = ProjectLoop.of(project)
    context = live_state(project)
    context.update(
        settings_fields=form if form is not None else settings_form.fields(loop_row.settings or {}),
        base_model=loop_row.base_model if base_model is None else base_model,
        form_errors=form_errors or {},
        serve_port=settings.PREFLOOP_SERVE_PORT,
    )
    return render(request, "training/loop.html", context, status=status)


@login_required
@require_GET
def loop(request: HttpRequest, project_id: int) -> HttpResponse:
    return _page(request, project_for(request, project_id, lead=True))


@login_required
@require_GET
def loop_status(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    if not getattr(request, "htmx", False):
        return redirect("loop", project_id=project.pk)
    context = {**live_state(project), "serve_port": settings.PREFLOOP_SERVE_PORT}
    return render(request, "training/loop.html#live", context)


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
    """Close collection and train now; below the round's target only once the lead has
    confirmed the number of pairs the page showed."""

    def train(project: Project) -> None:
        loop_round = services.get_round(project, round_id)
        if loop_round.state == Round.State.COLLECTING and request.POST.get("confirm") != "1":
            offer = train_offer(loop_round)
            if offer["below_target"]:
                raise InvalidInput(
                    f"Round {loop_round.number} has {offer['judged']} of its "
                    f"{offer['target']} judgments. Confirm to train on {offer['pairs']} pairs."
                )
        services.begin_training(loop_round)

    return _act(request, project_id, train, "Training queued.")


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
    def promote(project: Project) -> None:
        version = services.get_version(project, version_id)
        if version.state == ModelVersion.State.REJECTED:
            raise Conflict(
                f"{version.label} failed the gate and never served, so the page does not serve "
                "it; start the next round instead."
            )
        services.promote(version)

    return _act(request, project_id, promote, "Serving version changed.")


@login_required
@require_POST
def loop_settings(request: HttpRequest, project_id: int) -> HttpResponse:
    """Save the base model and the round settings form; a wrong value is shown next to its
    field, with what was typed kept, and nothing is stored."""
    project = project_for(request, project_id, lead=True)
    base_model = request.POST.get("base_model", ProjectLoop.of(project).base_model)
    values, errors, form = settings_form.parse(request.POST)
    if not errors:
        try:
            update_loop_settings(
                project,
                base_model=base_model,
                loop_settings=values,
                new_chain=request.POST.get("new_chain") in ("on", "true", "1"),
            )
        except ServiceError as exc:
            errors = settings_form.error_by_field(exc.message)
            for field in form:
                field.error = errors.get(field.name, "")
    if errors:
        return _page(
            request, project, form=form, base_model=base_model, form_errors=errors, status=400
        )
    messages.success(request, "Loop settings saved; they apply from the next round.")
    return redirect("loop", project_id=project.pk)
