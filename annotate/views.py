"""Browser views. Each one: access check, one service call, render or redirect."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.middleware import HtmxDetails

from . import services
from .access import project_for
from .datasets.imports import import_file
from .errors import NotAllowed, ServiceError
from .forms import ImportForm, MemberForm, ProjectForm
from .markdown import render_markdown
from .models import Assignment, Comparison, Judgment, Membership, Project


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    memberships = (
        Membership.objects.filter(user=cast(Any, request.user))
        .select_related("project")
        .order_by("project__name")
    )
    rows = [(m, services.progress(m.project, request.user)) for m in memberships]
    return render(
        request,
        "annotate/home.html",
        {"rows": rows, "can_create": services.can_create_projects(request.user)},
    )


@login_required
def project_new(request: HttpRequest) -> HttpResponse:
    if not services.can_create_projects(request.user):
        raise PermissionDenied("Your account cannot create projects. Ask an administrator.")
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = services.create_project(request.user, **form.cleaned_data)
        messages.success(
            request, f"Project “{project.name}” created. Add annotators and import data."
        )
        return redirect("project", project_id=project.pk)
    return render(request, "annotate/project_form.html", {"form": form, "project": None})


@login_required
@require_GET
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id)
    role = project.role_of(request.user)
    context: dict[str, Any] = {
        "project": project,
        "role": role,
        "is_lead": role == Membership.Role.LEAD,
        "progress": services.progress(project, request.user),
        "instructions_html": render_markdown(project.instructions),
    }
    if context["is_lead"]:
        context.update(
            members=project.memberships.select_related("user").order_by("role", "user__username"),
            member_form=MemberForm(),
            import_form=ImportForm(),
            n_prompts=project.prompts.count(),
            n_comparisons=project.comparisons.filter(kind__in=Comparison.PAIR_KINDS).count(),
            n_judgments=project.judgments.count(),
        )
    return render(request, "annotate/project.html", context)


@login_required
def project_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    form = ProjectForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        try:
            services.update_project(request.user, project, form.cleaned_data)
        except ServiceError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Settings saved.")
            return redirect("project", project_id=project.pk)
    return render(request, "annotate/project_form.html", {"form": form, "project": project})


@login_required
@require_POST
def project_members(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            membership = services.add_member(
                project, form.cleaned_data["username"], form.cleaned_data["role"]
            )
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{membership.user} is now a {membership.role}.")
    else:
        messages.error(request, "Give a username and a role.")
    return redirect("project", project_id=project.pk)


@login_required
@require_POST
def project_import(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    form = ImportForm(request.POST, request.FILES)
    if not form.is_valid():
        for error in form.non_field_errors() + [e for errs in form.errors.values() for e in errs]:
            messages.error(request, str(error))
        return redirect("datasets", project_id=project.pk)
    upload = form.cleaned_data.get("file")
    stream: Any = upload or io.BytesIO(form.cleaned_data["text"].encode("utf-8"))
    try:
        # The form takes JSONL, whatever an uploaded file is called.
        report = import_file(project, form.cleaned_data["kind"], stream, "lines.jsonl")
    except ServiceError as exc:
        messages.error(request, f"Nothing was imported: {exc.message}")
    else:
        messages.success(request, f"Imported: {report.summary()}")
    return redirect("datasets", project_id=project.pk)


@login_required
@require_GET
def instructions(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id)
    return render(
        request,
        "annotate/instructions.html",
        {"project": project, "instructions_html": render_markdown(project.instructions)},
    )


# --- Annotating --------------------------------------------------------------------


def _task_response(
    request: HtmxHttpRequest,
    project: Project,
    assignment: Assignment | None,
    *,
    error: str | None = None,
    status: int = 200,
    flash: str | None = None,
    paused: str | None = None,
) -> HttpResponse:
    undoable = services.last_undoable(project, request.user)
    context: dict[str, Any] = {
        "project": project,
        "assignment": assignment,
        "task": _task_view(assignment) if assignment else None,
        "progress": services.progress(project, request.user),
        "undoable": undoable,
        "client_id": uuid.uuid4(),
        "error": error,
        "flash": flash,
        "paused": paused,
        "strengths": Judgment.Strength.choices,
    }
    if request.htmx:
        # Only the task swaps in; the instructions around it are already on the page.
        return render(request, "annotate/annotate.html#task", context, status=status)
    context["instructions_html"] = render_markdown(project.instructions)
    return render(request, "annotate/annotate.html", context, status=status)


def _task_view(assignment: Assignment) -> dict[str, Any]:
    comparison = assignment.comparison
    left, right = assignment.shown_completions()
    return {
        "comparison_id": comparison.pk,
        "messages": comparison.prompt.messages,
        "left": left.text,
        "right": right.text,
        # False marks a completion cut off by the token budget (None: not known)
        "left_finished": left.finished,
        "right_finished": right.finished,
        "lease_expires": assignment.lease_expires,
    }


@login_required
@require_GET
def annotate(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id)
    return _next_task_response(request, project)


def _next_task_response(request: HtmxHttpRequest, project: Project) -> HttpResponse:
    """The next pair, or why there is none for a paused annotator."""
    try:
        assignment = services.next_assignment(project, request.user)
    except NotAllowed as exc:
        return _task_response(request, project, None, paused=exc.message)
    return _task_response(request, project, assignment)


def _int_or_none(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ServiceError(f"Not a number: {raw!r}") from None


def _judgment_input(post: Any) -> tuple[int, services.JudgmentInput]:
    comparison_id = _int_or_none(post.get("comparison"))
    if comparison_id is None:
        raise ServiceError("The form lost its pair: reload the page.")
    try:
        client_id = uuid.UUID(post.get("client_id", ""))
    except ValueError:
        raise ServiceError("The form lost its id: reload the page.") from None
    return comparison_id, services.JudgmentInput(
        choice=post.get("choice", ""),
        client_id=client_id,
        strength=_int_or_none(post.get("strength")),
        rationale=post.get("rationale", ""),
        duration_ms=_int_or_none(post.get("duration_ms")),
    )


def _queue_action(
    request: HtmxHttpRequest, project: Project, action: Callable[[], Assignment | None]
) -> HttpResponse:
    """Run one queue action, then show what comes next.

    ``action`` returns the assignment to show, or None for "the next one". An
    error shows the pair the user holds with the message. Without htmx the
    page redirects (post/redirect/get), so a reload never re-posts.
    """
    try:
        shown = action()
    except ServiceError as exc:
        current = services.current_assignment(project, request.user)
        return _task_response(request, project, current, error=exc.message, status=exc.status_code)
    if not request.htmx:
        return redirect("annotate", project_id=project.pk)
    if shown is not None:
        return _task_response(request, project, shown, flash="Undone: judge this pair again.")
    return _next_task_response(request, project)


@login_required
@require_POST
def judge(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id)

    def action() -> None:
        comparison_id, data = _judgment_input(request.POST)
        services.submit_judgment(request.user, comparison_id, data)

    return _queue_action(request, project, action)


@login_required
@require_POST
def skip(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id)

    def action() -> None:
        comparison_id = _int_or_none(request.POST.get("comparison"))
        services.skip(project, request.user, comparison_id or 0)

    return _queue_action(request, project, action)


@login_required
@require_POST
def undo(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id)
    return _queue_action(
        request, project, lambda: services.undo_judgment(request.user, project=project)
    )
