"""SVG line plots of the loop's history and the live training run, drawn from stored numbers.

Each plot is scaled into a fixed box here, so the template only places points and labels. The
loop page polls its status every two seconds while a round is open; ``cached_loop_plots`` draws
the plots again only when a number they are drawn from may have changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max

from annotate.models import Comparison, Judgment, Project

from . import services
from .models import ModelVersion, Round, TrainingRun

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


def loop_plots(project: Project, live_run: TrainingRun | None) -> list[dict[str, Any]]:
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
    for loop_round in (
        Round.objects.filter(project=project).select_related("policy").order_by("number")
    ):
        parent_id = loop_round.policy.parent_id
        rate = services.eval_win_rates(loop_round).get(parent_id) if parent_id else None
        if rate is not None and rate.rate is not None:
            low, high = rate.interval() or (rate.rate, rate.rate)
            win_points.append((loop_round.policy.number, rate.rate))
            bars.append({"x": loop_round.policy.number, "y": rate.rate, "low": low, "high": high})
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


# Keys name the state a value was drawn from, so a changed state never reads an old entry;
# the timeout only bounds how long entries nobody asks for stay.
_CACHE_SECONDS = 600


def _plots_key(project: Project, loop_round: Round | None, live_run: TrainingRun | None) -> str:
    """A key that changes whenever anything ``loop_plots`` reads may have changed.

    Versions' metrics are written when they are created, the live run's losses with its step,
    and the win rates move with the judgments on eval comparisons (an undo deletes one, hence
    the count beside the newest id). Row ids are reused when a database is recreated, so the
    project's creation time is part of the key too.
    """
    versions = ModelVersion.objects.filter(project=project, number__gt=0).aggregate(
        n=Count("pk"), newest=Max("pk")
    )
    judged = Judgment.objects.filter(
        project=project, comparison__kind=Comparison.Kind.EVAL
    ).aggregate(n=Count("pk"), newest=Max("pk"))
    state = (
        project.pk,
        project.created_at.isoformat(),
        (loop_round.pk, loop_round.state) if loop_round is not None else None,
        (live_run.pk, live_run.state, live_run.step, len(live_run.losses))
        if live_run is not None
        else None,
        (versions["n"], versions["newest"]),
        (judged["n"], judged["newest"]),
    )
    return "loop-plots:" + hashlib.sha256(repr(state).encode()).hexdigest()


def cached_loop_plots(
    project: Project, loop_round: Round | None, live_run: TrainingRun | None
) -> list[dict[str, Any]]:
    """``loop_plots``, drawn again only when the project's loop state has changed.

    ``loop_round`` is the project's latest round and ``live_run`` its latest training run.
    """
    key = _plots_key(project, loop_round, live_run)
    plots: list[dict[str, Any]] | None = cache.get(key)
    if plots is None:
        plots = loop_plots(project, live_run)
        cache.set(key, plots, _CACHE_SECONDS)
    return plots
