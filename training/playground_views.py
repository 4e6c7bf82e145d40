"""The Playground: a lead asks two versions of the project the same prompt, side by side.

The answers come from the running ``serve_model`` process (``training.serving_client``); the
page keeps its settings (versions, max tokens) in the session, renders answers as the annotate
page does (Markdown, raw HTML escaped: model output is untrusted) and marks answers that the
token limit cut off and versions that the gate rejected.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from annotate.access import project_for

from . import services
from .models import ModelVersion
from .serving_client import ask_model_server

DEFAULT_MAX_TOKENS = 128
MAX_TOKENS_LIMIT = 1024


def _session_key(project_id: int) -> str:
    return f"playground:{project_id}"


def _max_tokens(raw: Any) -> int:
    try:
        return max(1, min(MAX_TOKENS_LIMIT, int(raw)))
    except (TypeError, ValueError):
        return DEFAULT_MAX_TOKENS


@login_required
@require_http_methods(["GET", "POST"])
def playground(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    serving = services.serving_version(project)  # made on first use, with the base version
    versions = list(ModelVersion.objects.filter(project=project).order_by("-number"))
    labels = {str(v.number): v for v in versions}
    # the last settings sent, else the serving version against the base
    saved = request.session.get(_session_key(project.pk), {})
    source = request.POST if request.method == "POST" else saved
    left = str(source.get("left", saved.get("left", serving.number)))
    right = str(source.get("right", saved.get("right", "0")))
    max_tokens = _max_tokens(source.get("max_tokens", saved.get("max_tokens", DEFAULT_MAX_TOKENS)))
    prompt = request.POST.get("prompt", "")
    results = None
    if request.method == "POST":
        if left not in labels or right not in labels:
            messages.error(request, "Pick two versions of this project.")
            return _page(request, project, versions, left, right, max_tokens, prompt, None)
        request.session[_session_key(project.pk)] = {
            "left": left,
            "right": right,
            "max_tokens": max_tokens,
        }
        if not prompt.strip():
            messages.error(request, "Write a prompt to send.")
        else:
            results = [
                {
                    "version": labels[n],
                    **ask_model_server(f"{project.slug}:v{n}", prompt, max_tokens),
                }
                for n in (left, right)
            ]
    return _page(request, project, versions, left, right, max_tokens, prompt, results)


def _page(
    request: HttpRequest,
    project: Any,
    versions: list[ModelVersion],
    left: str,
    right: str,
    max_tokens: int,
    prompt: str,
    results: list[dict[str, Any]] | None,
) -> HttpResponse:
    context = {
        "project": project,
        "versions": versions,
        "left": left,
        "right": right,
        "max_tokens": max_tokens,
        "max_tokens_limit": MAX_TOKENS_LIMIT,
        "prompt": prompt,
        "results": results,
        "serve_port": settings.PREFLOOP_SERVE_PORT,
    }
    return render(request, "training/playground.html", context)
