"""The lead's pages for the loop: rounds live, history plots, actions, and the playground.

Every view: access check, at most one service call, render or redirect. The page polls its
status partial while a round is open; plots are SVG drawn from numbers computed here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotate.access import project_for
from annotate.errors import ServiceError
from annotate.models import Project

from . import services
from .loop_settings import LoopSettings, validate_base_model
from .models import ModelVersion, ProjectLoop, Round, TrainingRun

# --- Plots ---------------------------------------------------------------------------------

_W, _H, _PAD = 320, 150, 28


@dataclass
class Plot:
    """An SVG line plot: series of (x, y) points, scaled into a fixed box."""

    title: str
    series: list[dict[str, Any]] = field(default_factory=list)
    bars: list[dict[str, Any]] = field(default_factory=list)
    y_min: float | None = None
    y_max: float | None = None
    width: int = _W
    height: int = _H
    x_label: str = "round"

    def scaled(self) -> dict[str, Any]:
        points = [p for s in self.series for p in s["points"]]
        points += [(b["x"], b["low"]) for b in self.bars] + [(b["x"], b["high"]) for b in self.bars]
        if not points:
            return {"plot": self, "empty": True}
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        lo = self.y_min if self.y_min is not None else min(ys)
        hi = self.y_max if self.y_max is not None else max(ys)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5
        x0, x1 = min(xs), max(xs)
        span = (x1 - x0) or 1.0

        def sx(x: float) -> float:
            return round(_PAD + (x - x0) / span * (self.width - 2 * _PAD), 1)

        def sy(y: float) -> float:
            return round(self.height - _PAD + (lo - y) / (hi - lo) * (self.height - 2 * _PAD), 1)

        lines = [
            {
                "label": s["label"],
                "cls": s.get("cls", ""),
                "points": " ".join(f"{sx(x)},{sy(y)}" for x, y in s["points"]),
                "dots": [{"x": sx(x), "y": sy(y), "value": f"{y:.3g}"} for x, y in s["points"]],
            }
            for s in self.series
        ]
        bars = [
            {"x": sx(b["x"]), "y_low": sy(b["low"]), "y_high": sy(b["high"]), "y": sy(b["y"])}
            for b in self.bars
        ]
        return {
            "plot": self,
            "empty": False,
            "lines": lines,
            "bars": bars,
            "y_lo": f"{lo:.3g}",
            "y_hi": f"{hi:.3g}",
            "x_lo": f"{x0:g}",
            "x_hi": f"{x1:g}",
            "base_y": self.height - _PAD,
            "right_x": self.width - _PAD,
            "pad": _PAD,
        }


def _plots(project: Project, live_run: TrainingRun | None) -> list[dict[str, Any]]:
    versions = list(ModelVersion.objects.filter(project=project, number__gt=0).order_by("number"))
    after = [(v.number, v.heldout("after")) for v in versions]
    before = [(v.number, v.heldout("before")) for v in versions]

    def series(rows: list[tuple[int, dict[str, float]]], key: str, label: str, cls: str) -> dict:
        return {"label": label, "cls": cls, "points": [(n, m[key]) for n, m in rows if key in m]}

    runs = [v.metrics.get("run") or {} for v in versions]
    plots = [
        Plot(
            "Training loss (mean per version)",
            [
                {
                    "label": "loss",
                    "cls": "s1",
                    "points": [
                        (v.number, r["loss"])
                        for v, r in zip(versions, runs, strict=True)
                        if "loss" in r
                    ],
                }
            ],
            x_label="version",
        ),
        Plot(
            "Held-out reward accuracy",
            [
                series(before, "reward_accuracy", "parent", "s2"),
                series(after, "reward_accuracy", "new version", "s1"),
            ],
            y_min=0.0,
            y_max=1.0,
            x_label="version",
        ),
        Plot(
            "Held-out reward margin",
            [series(after, "margin", "margin", "s1")],
            x_label="version",
        ),
        Plot(
            "Held-out chosen log-prob",
            [
                series(before, "chosen_logp", "parent", "s2"),
                series(after, "chosen_logp", "new version", "s1"),
            ],
            x_label="version",
        ),
    ]
    win_points, bars = [], []
    for round in Round.objects.filter(project=project).select_related("policy").order_by("number"):
        parent_id = round.policy.parent_id
        rate = services.eval_win_rates(round).get(parent_id) if parent_id else None
        if rate is not None and rate.rate is not None:
            low, high = rate.interval() or (rate.rate, rate.rate)
            win_points.append((round.policy.number, rate.rate))
            bars.append({"x": round.policy.number, "y": rate.rate, "low": low, "high": high})
    plots.append(
        Plot(
            "Human win rate of v(n) over v(n-1), 95% interval",
            [{"label": "win rate", "cls": "s1", "points": win_points}],
            bars=bars,
            y_min=0.0,
            y_max=1.0,
            x_label="version",
        )
    )
    if live_run is not None and live_run.losses:
        plots.insert(
            0,
            Plot(
                f"Training loss, round {live_run.round.number} attempt {live_run.attempt}",
                [
                    {
                        "label": "loss",
                        "cls": "s1",
                        "points": [(i + 1, v) for i, v in enumerate(live_run.losses)],
                    }
                ],
                x_label="step",
            ),
        )
    return [p.scaled() for p in plots]


# --- Pages ---------------------------------------------------------------------------------


def _status_context(project: Project) -> dict[str, Any]:
    round = services.current_round(project)
    run = round.latest_run() if round is not None else None
    collecting = None
    if round is not None and round.state == Round.State.COLLECTING:
        collecting = services.collecting_progress(round)
    return {
        "project": project,
        "round": round,
        "run": run,
        "run_lost": run is not None and run.is_lost(),
        "collecting": collecting,
        "serving": services.serving_version(project),
        "polling": round is not None and round.is_open,
        "plots": _plots(project, run),
    }


@login_required
@require_GET
def loop(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    context = _status_context(project)
    ls = services.loop_settings(project)
    loop_row = ProjectLoop.of(project)
    context.update(
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
    base_model = request.POST.get("base_model", ProjectLoop.of(project).base_model).strip()
    try:
        data = json.loads(request.POST.get("loop_settings") or "{}")
        validate_base_model(base_model)
        LoopSettings.from_dict(data)
    except json.JSONDecodeError as exc:
        messages.error(request, f"Loop settings are not valid JSON: {exc}")
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        with transaction.atomic():
            ProjectLoop.store(project, base_model=base_model, settings=data)
        messages.success(request, "Loop settings saved; they apply from the next round.")
    return redirect("loop", project_id=project.pk)


def _ask_server(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    """One chat completion from the `serve_model` process (the web process loads no model)."""
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "seed": 0,
        }
    ).encode()
    url = f"http://127.0.0.1:{settings.PREFLOOP_SERVE_PORT}/v1/chat/completions"
    request = urllib.request.Request(  # noqa: S310 - a fixed local http URL
        url, data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
            data = json.loads(response.read())
        return {"text": data["choices"][0]["message"]["content"], "error": None}
    except urllib.error.HTTPError as exc:
        return {"text": "", "error": f"{exc.code}: {exc.read().decode(errors='replace')[:300]}"}
    except (OSError, ValueError, KeyError) as exc:
        return {"text": "", "error": f"the model server is not reachable at {url}: {exc}"}


@login_required
def playground(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request, project_id, lead=True)
    versions = list(ModelVersion.objects.filter(project=project).order_by("-number"))
    labels = {str(v.number): v for v in versions}
    serving = services.serving_version(project)
    left = request.POST.get("left", str(serving.number))
    right = request.POST.get("right", "0")
    prompt = request.POST.get("prompt", "")
    results = None
    if request.method == "POST" and prompt.strip():
        if left not in labels or right not in labels:
            messages.error(request, "Pick two versions of this project.")
        else:
            try:
                max_tokens = max(1, min(1024, int(request.POST.get("max_tokens", "128"))))
            except ValueError:
                max_tokens = 128
            results = [
                {"version": labels[n], **_ask_server(f"{project.slug}:v{n}", prompt, max_tokens)}
                for n in (left, right)
            ]
    context = {
        "project": project,
        "versions": versions,
        "left": left,
        "right": right,
        "prompt": prompt,
        "results": results,
        "serve_port": settings.PREFLOOP_SERVE_PORT,
    }
    return render(request, "training/playground.html", context)
