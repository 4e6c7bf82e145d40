"""The loop page's plots are real drawings of the stored numbers: labelled axes, reference
lines, intervals with their n, rejected versions marked, ranges that keep small changes small."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache

from annotate.models import Judgment
from tests.factories import ComparisonFactory
from training import plots, services
from training.models import ModelVersion, Round, TrainingRun
from training.plot_svg import Figure, Series, render_svg, y_limits
from training.plots import loop_plots

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text[^>]*>([^<]*)</text>", svg)


def _history(team: Any) -> dict[str, dict[str, Any]]:
    """v1 promoted, v2 rejected by the gate, each with held-out numbers; people judged v1
    against base on three eval comparisons in round 2."""
    base = services.base_version(team.project)
    r1 = Round.objects.create(project=team.project, number=1, policy=base, state="promoted")
    heldout = {
        "heldout_before": {"reward_accuracy": 0.5, "margin": 0.0, "chosen_logp": -156.2},
        "heldout_after": {"reward_accuracy": 0.75, "margin": 0.4, "chosen_logp": -155.9},
        "num_heldout_pairs": 4,
        "run": {"loss": 0.655},
    }
    v1 = ModelVersion.objects.create(
        project=team.project, number=1, spec="a", parent=base, trained_in=r1, metrics=heldout
    )
    services.promote(v1)
    r2 = Round.objects.create(project=team.project, number=2, policy=v1, state="rejected")
    ModelVersion.objects.create(
        project=team.project,
        number=2,
        spec="b",
        parent=v1,
        trained_in=r2,
        state=ModelVersion.State.REJECTED,
        metrics={**heldout, "run": {"loss": 0.639}},
        gate={
            "mode": "simulated",
            "win_rate": 0.3,
            "ci95": [0.2, 0.42],
            "opponent": "v1",
            "comparisons": 120,
            "prompts": 30,
            "decision": "rejected",
        },
    )
    for choice in ("a", "a", "b"):
        comparison = ComparisonFactory(project=team.project, round=2, kind="eval")
        comparison.completion_a.model_version_id = v1.pk
        comparison.completion_a.save()
        comparison.completion_b.model_version_id = base.pk
        comparison.completion_b.save()
        Judgment.objects.create(
            project=team.project,
            comparison=comparison,
            annotator=team.alice,
            choice=choice,
            left_is_a=True,
        )
    return {p["slug"]: p for p in loop_plots(team.project, None)}


def test_it_labels_axes_with_units_and_names_versions(team: Any) -> None:
    plots = _history(team)
    texts = _texts(plots["heldout-logp"]["svg"])
    assert "log-prob of chosen completion (nats)" in texts
    assert "version (trained in round n from its parent)" in texts
    assert "v1" in texts and "v2" in texts
    assert "DPO loss (nats)" in _texts(plots["version-loss"]["svg"])


def test_it_draws_the_no_preference_line_and_n_on_win_rates(team: Any) -> None:
    svg = _history(team)["win-rate"]["svg"]
    assert 'id="win-rate-ref-0.5"' in svg
    assert "no preference (0.5)" in _texts(svg)
    assert "n=3" in _texts(svg)
    assert "win rate (ties count half)" in _texts(svg)


def test_it_marks_rejected_versions(team: Any) -> None:
    plots = _history(team)
    for slug in ("gate-win-rate", "heldout-accuracy", "version-loss"):
        svg = plots[slug]["svg"]
        assert "rejected by the gate" in _texts(svg), slug
        assert f'id="{slug}-rejected-band"' in svg
    assert 'id="heldout-accuracy-rejected"' in plots["heldout-accuracy"]["svg"]


def test_it_keeps_parent_and_child_apart(team: Any) -> None:
    svg = _history(team)["heldout-accuracy"]["svg"]
    assert "parent (before training)" in _texts(svg)
    assert "new version (after)" in _texts(svg)


def test_it_does_not_exaggerate_a_small_change() -> None:
    loss = Figure(
        "loss",
        "version",
        "DPO loss (nats)",
        [Series("loss", [(1, 0.655), (2, 0.639)])],
        include_zero=True,
    )
    lo, hi = y_limits(loss)
    assert lo <= 0 and hi >= 0.655
    logp = Figure(
        "logp", "version", "nats", [Series("lp", [(1, -156.2), (2, -155.9)])], min_span=30
    )
    lo, hi = y_limits(logp)
    assert hi - lo >= 30
    ticks = [t for t in _texts(render_svg(logp)) if re.fullmatch(r"[−-]?\d+(\.\d+)?", t)]
    assert len(ticks) == len(set(ticks)) >= 3  # no two ticks read the same


def test_it_keeps_matplotlib_out_of_the_web_process_until_a_plot_is_drawn() -> None:
    code = (
        "import django, sys; django.setup(); import training.views, training.plots; "
        "print('matplotlib' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "annotate.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_training_step_draws_only_the_live_loss_again(
    team: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(team)
    drawn: list[int] = []
    draw = plots.history_plots
    monkeypatch.setattr(plots, "history_plots", lambda p: drawn.append(p.pk) or draw(p))
    cache.clear()
    loop_round = Round.objects.get(project=team.project, number=2)
    run = TrainingRun.objects.create(
        round=loop_round, version_number=3, state=TrainingRun.State.RUNNING, losses=[0.69]
    )
    first = plots.cached_loop_plots(team.project, loop_round, run)
    run.losses, run.step = [0.69, 0.61], 2
    second = plots.cached_loop_plots(team.project, loop_round, run)
    assert drawn == [team.project.pk]
    assert first[0]["slug"] == second[0]["slug"] == "live-loss"
    assert first[0]["svg"] != second[0]["svg"] and first[1:] == second[1:]
