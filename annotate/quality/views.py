"""The Quality page for leads: agreement, bias, speed, gold pairs and paused annotators."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotate.access import project_for
from annotate.errors import ServiceError
from annotate.models import Comparison, Judgment

from . import gold
from .report import member_named, quality_report

# Gold pairs listed on the page; the API has them all.
_GOLD_LISTED = 200


@login_required
@require_GET
def quality(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    pseudonyms = request.GET.get("names") == "pseudonyms"
    report = quality_report(project, pseudonyms=pseudonyms)
    gold_pairs = (
        Comparison.objects.filter(project=project)
        .exclude(gold_choice="")
        .select_related("prompt")
        .order_by("-pk")[:_GOLD_LISTED]
    )
    context: dict[str, Any] = {
        "project": project,
        "report": report,
        "pseudonyms": pseudonyms,
        "gold_pairs": gold_pairs,
        "answers": Judgment.Choice.choices,
    }
    if getattr(request, "htmx", False):
        # The figures refresh themselves as judgments arrive; the forms around them stay put.
        return render(request, "quality/quality.html#figures", context)
    return render(request, "quality/quality.html", context)


def _back(project_id: int, request: HttpRequest) -> HttpResponse:
    url = reverse("quality", args=[project_id])
    if request.POST.get("names") == "pseudonyms":
        url += "?names=pseudonyms"
    return redirect(url)


@login_required
@require_POST
def quality_gold(request: HttpRequest, project_id: int) -> HttpResponse:
    """Mark a pair as gold with its answer, or ("none") take it out of gold."""
    project = project_for(request, project_id, lead=True)
    comparison_id = request.POST.get("comparison", "").strip()
    answer = request.POST.get("answer", "")
    try:
        if not comparison_id.isdigit():
            raise ServiceError("comparison: give the pair's number.")
        if answer == "none":
            gold.unmark_gold(request.user, project, int(comparison_id))
            messages.success(request, f"Pair {comparison_id} is no longer gold.")
        else:
            gold.mark_gold(request.user, project, int(comparison_id), answer)
            messages.success(request, f"Pair {comparison_id} is gold now.")
    except ServiceError as exc:
        messages.error(request, exc.message)
    return _back(project.pk, request)


@login_required
@require_POST
def quality_resume(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    shown = request.POST.get("annotator", "")
    username = member_named(project, shown, pseudonyms=request.POST.get("names") == "pseudonyms")
    try:
        if username is None:
            raise ServiceError(f'No member shown as "{shown}" in this project.')
        gold.resume(request.user, project, username)
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{shown} is resumed and can annotate again.")
    return _back(project.pk, request)
