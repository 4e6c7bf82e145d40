"""The loop page's plots: which stored numbers each one shows, drawn to SVG by ``plot_svg``.

Only numbers measured the same way every round are joined into a trend: the live run's loss
(one run, step by step) and the leaderboard's ratings (people's judgments on the fixed eval
prompts). Held-out numbers come from each round's own held-out pairs, so they are drawn per
version as parent against child, never as a line across versions. The loop page polls every
few seconds while a round is open; ``cached_loop_plots`` draws again only when a number the
plots are drawn from may have changed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Max

from annotate.models import Comparison, Judgment, Project

from . import services
from .models import ModelVersion, Round, TrainingRun
from .plot_svg import Figure, Series, render_svg
from .services.leaderboard import LeaderboardEntry

# The DPO loss of a policy equal to its reference: -log(sigmoid(0)).
LN2 = math.log(2)
# Parent and child of a version sit this far left and right of its tick, so neither hides.
_OFFSET = 0.15


def drawn(figure: Figure, rows: Sequence[tuple[str, str]], note: str = "") -> dict[str, Any]:
    """A plot as the template shows it: the SVG, a note on what it measures, its numbers."""
    return {
        "title": figure.title,
        "slug": figure.slug,
        "empty": figure.empty,
        "svg": "" if figure.empty else render_svg(figure),
        "note": note,
        "rows": list(rows),
    }


def _version_axis(versions: list[ModelVersion]) -> dict[str, Any]:
    return {
        "x_label": "version (trained in round n from its parent)",
        "x_ticks": [(v.number, v.label) for v in versions],
        "rejected": [v.number for v in versions if v.state == ModelVersion.State.REJECTED],
    }


def _parent_child(
    versions: list[ModelVersion], key: str
) -> tuple[Series, Series, list[Any], list[tuple[str, str]]]:
    """Each version's held-out ``key`` before (its parent) and after (it), side by side."""
    parent = Series("parent (before training)", [], style="parent")
    child = Series("new version (after)", [], style="child")
    links: list[Any] = []
    rows: list[tuple[str, str]] = []
    for v in versions:
        before, after = v.heldout("before").get(key), v.heldout("after").get(key)
        if before is not None:
            parent.points.append((v.number - _OFFSET, before))
        if after is not None:
            child.points.append((v.number + _OFFSET, after))
        if before is not None and after is not None:
            links.append(((v.number - _OFFSET, before), (v.number + _OFFSET, after)))
        if before is not None or after is not None:
            n = v.metrics.get("num_heldout_pairs")
            text = f"{_num(before)} → {_num(after)}" + (f" (n={n})" if n else "")
            rows.append((v.label, text))
    return parent, child, links, rows


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _heldout_plots(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    axis = _version_axis(versions)
    note = (
        "Each round's own held-out pairs, so compare a version with its parent, "
        "not one version with the next."
    )
    plots = []
    parent, child, links, rows = _parent_child(versions, "reward_accuracy")
    plots.append(
        drawn(
            Figure(
                "Held-out reward accuracy",
                y_label="share of held-out pairs ranked right",
                series=[parent, child],
                links=links,
                y_range=(-0.03, 1.03),
                references=[(0.5, "chance (0.5)")],
                slug="heldout-accuracy",
                **axis,
            ),
            rows,
            note,
        )
    )
    parent, child, links, rows = _parent_child(versions, "margin")
    plots.append(
        drawn(
            Figure(
                "Held-out reward margin",
                y_label="chosen − rejected reward (nats)",
                series=[parent, child],
                links=links,
                include_zero=True,
                min_span=0.5,
                slug="heldout-margin",
                **axis,
            ),
            rows,
            note,
        )
    )
    parent, child, links, rows = _parent_child(versions, "chosen_logp")
    values = [abs(y) for s in (parent, child) for _, y in s.points]
    plots.append(
        drawn(
            Figure(
                "Held-out chosen log-prob",
                y_label="log-prob of chosen completion (nats)",
                series=[parent, child],
                links=links,
                # a fifth of the magnitude: a few nats of drift on -150 reads as the small
                # change it is
                min_span=max(2.0, 0.2 * max(values, default=0.0)),
                slug="heldout-logp",
                **axis,
            ),
            rows,
            note,
        )
    )
    return plots


def _loss_plot(versions: list[ModelVersion]) -> dict[str, Any]:
    points: list[tuple[float, float]] = [
        (v.number, (v.metrics.get("run") or {})["loss"])
        for v in versions
        if "loss" in (v.metrics.get("run") or {})
    ]
    figure = Figure(
        "Training loss (mean over each version's run)",
        y_label="DPO loss (nats)",
        series=[Series("mean loss", points)],
        include_zero=True,
        references=[(LN2, "ln 2: loss of the untrained policy")],
        slug="version-loss",
        **_version_axis(versions),
    )
    rows = [(f"v{n}", f"{y:.4f}") for n, y in points]
    return drawn(figure, rows, "Each version's own training pairs; not a trend across versions.")


def _win_rate_plot(project: Project, versions: list[ModelVersion]) -> dict[str, Any]:
    """People's win rate of each serving version over its parent on the eval prompts."""
    series = Series("people, eval prompts", [], intervals=[], notes=[])
    rows = []
    rounds = Round.objects.filter(project=project).select_related("policy").order_by("number")
    for loop_round in rounds:
        parent_id = loop_round.policy.parent_id
        rate = services.eval_win_rates(loop_round).get(parent_id) if parent_id else None
        if rate is None or rate.rate is None:
            continue
        low, high = rate.interval() or (rate.rate, rate.rate)
        x = loop_round.policy.number
        series.points.append((x, rate.rate))
        series.intervals.append((low, high))  # type: ignore[union-attr]
        series.notes.append(f"n={rate.n}")  # type: ignore[union-attr]
        rows.append(
            (
                loop_round.policy.label,
                f"{rate.rate:.2f} [{low:.2f}, {high:.2f}], n={rate.n} (round {loop_round.number})",
            )
        )
    figure = Figure(
        "People's win rate over the parent",
        y_label="win rate (ties count half)",
        series=[series],
        y_range=(-0.03, 1.03),
        references=[(0.5, "no preference (0.5)")],
        slug="win-rate",
        **_version_axis(versions),
    )
    note = "Eval comparisons judged in the round the version served; bars: 95% interval."
    return drawn(figure, rows, note)


def _gate_plot(versions: list[ModelVersion]) -> dict[str, Any] | None:
    """The simulated gate's win rate of each candidate over the serving version, dev prompts."""
    gated = [v for v in versions if v.gate.get("win_rate") is not None]
    if not gated:
        return None
    series = Series("judge, dev prompts", [], intervals=[], notes=[])
    rows = []
    for v in gated:
        g = v.gate
        low, high = (g.get("ci95") or [g["win_rate"], g["win_rate"]])[:2]
        series.points.append((v.number, g["win_rate"]))
        series.intervals.append((low, high))  # type: ignore[union-attr]
        series.notes.append(f"n={g.get('comparisons', '?')}")  # type: ignore[union-attr]
        rows.append(
            (v.label, f"{g['win_rate']:.2f} [{low:.2f}, {high:.2f}] over {g.get('opponent', '?')}")
        )
    criterion = (gated[-1].gate.get("criterion") or {}).get("min_win_rate", 0.5)
    references = [(0.5, "no preference (0.5)")]
    if criterion != 0.5:
        references.append((criterion, f"required ({criterion:g})"))
    figure = Figure(
        "Gate: judge's win rate over the serving version",
        y_label="win rate (ties count half)",
        series=[series],
        y_range=(-0.03, 1.03),
        references=references,
        slug="gate-win-rate",
        **_version_axis(versions),
    )
    return drawn(figure, rows, "The same dev prompts every round; bars: 95% interval.")


def _live_loss_plot(run: TrainingRun) -> dict[str, Any]:
    points: list[tuple[float, float]] = [(i + 1, v) for i, v in enumerate(run.losses)]
    figure = Figure(
        f"Training loss, round {run.round.number} attempt {run.attempt}",
        x_label="optimizer step",
        y_label="DPO loss (nats)",
        series=[Series("loss", points, connect=True)],
        include_zero=True,
        references=[(LN2, "ln 2: loss at the start")],
        slug="live-loss",
    )
    rows = [(f"step {x}", f"{y:.4f}") for x, y in points[-5:]]
    return drawn(figure, rows, "One run, step by step.")


def history_plots(project: Project) -> list[dict[str, Any]]:
    versions = list(ModelVersion.objects.filter(project=project, number__gt=0).order_by("number"))
    plots = [_win_rate_plot(project, versions)]
    gate = _gate_plot(versions)
    if gate is not None:
        plots.append(gate)
    plots += _heldout_plots(versions)
    plots.append(_loss_plot(versions))
    return plots


def loop_plots(project: Project, live_run: TrainingRun | None) -> list[dict[str, Any]]:
    """The live run's loss, then the history; a training step draws only the live plot again
    (the history is cached by the versions and eval judgments it is drawn from)."""
    key = history_key(project)
    history: list[dict[str, Any]] | None = cache.get(key)
    if history is None:
        history = history_plots(project)
        cache.set(key, history, _CACHE_SECONDS)
    if live_run is not None and live_run.losses:
        return [_live_loss_plot(live_run), *history]
    return list(history)


def leaderboard_plot(entries: list[LeaderboardEntry]) -> dict[str, Any]:
    """Each rated version's rating with its 95% interval, joined as a trend: the ratings are
    all measured on the fixed eval prompts, on one scale."""
    series = Series(
        "rating",
        [(float(e.number), e.rating) for e in entries],
        connect=True,
        intervals=[(e.low, e.high) for e in entries],
        notes=[f"n={e.comparisons}" for e in entries],
    )
    figure = Figure(
        "Leaderboard: rating with 95% interval",
        x_label="version",
        y_label="rating (Elo scale, base = 1000)",
        series=[series],
        x_ticks=[(e.number, e.version) for e in entries],
        references=[(1000.0, "base (1000)")],
        min_span=200.0,
        slug="leaderboard",
    )
    rows = [(e.version, f"{e.rating:.0f} [{e.low:.0f}, {e.high:.0f}]") for e in entries]
    return drawn(figure, rows)


# Keys name the state a value was drawn from, so a changed state never reads an old entry;
# the timeout only bounds how long entries nobody asks for stay.
_CACHE_SECONDS = 600


def plots_key(project: Project, loop_round: Round | None, live_run: TrainingRun | None) -> str:
    """A key that changes whenever anything ``loop_plots`` reads may have changed.

    Versions' metrics are written when they are created and their state and gate when they
    are decided, the live run's losses with its step, and the win rates move with the
    judgments on eval comparisons (an undo deletes one, hence the count beside the newest id).
    Row ids are reused when a database is recreated, so the project's creation time is part
    of the key too.
    """
    state = (
        (loop_round.pk, loop_round.state) if loop_round is not None else None,
        (live_run.pk, live_run.state, live_run.step, len(live_run.losses))
        if live_run is not None
        else None,
        _history_state(project),
    )
    return "loop-plots:" + hashlib.sha256(repr(state).encode()).hexdigest()


def history_key(project: Project) -> str:
    """A key that changes whenever the history (versions, eval judgments) may have changed."""
    return "loop-history:" + hashlib.sha256(repr(_history_state(project)).encode()).hexdigest()


def _history_state(project: Project) -> tuple[Any, ...]:
    """What the history plots are drawn from, as it stands (two queries)."""
    # each version's id and state: a count and the newest id would miss a gate's decision
    states = sorted(
        ModelVersion.objects.filter(project=project, number__gt=0).values_list("pk", "state")
    )
    judged = Judgment.objects.filter(
        project=project, comparison__kind=Comparison.Kind.EVAL
    ).aggregate(n=Count("pk"), newest=Max("pk"))
    return (
        project.pk,
        project.created_at.isoformat(),
        states,
        (judged["n"], judged["newest"]),
    )


def cached_loop_plots(
    project: Project, loop_round: Round | None, live_run: TrainingRun | None
) -> list[dict[str, Any]]:
    """``loop_plots``, drawn again only when the project's loop state has changed.

    ``loop_round`` is the project's latest round and ``live_run`` its latest training run.
    """
    key = plots_key(project, loop_round, live_run)
    plots: list[dict[str, Any]] | None = cache.get(key)
    if plots is None:
        plots = loop_plots(project, live_run)
        cache.set(key, plots, _CACHE_SECONDS)
    return plots
