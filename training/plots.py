"""SVG line plots of the loop's history and the live training run, drawn from stored numbers.

Each plot is scaled into a fixed box here, so the template only places points and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from annotate.models import Project

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
