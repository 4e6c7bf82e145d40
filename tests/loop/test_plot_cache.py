"""The loop page's plots are drawn once per state of the loop, not on every status poll."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from annotate.models import Comparison, Judgment, Project
from tests.factories import ComparisonFactory
from training import plots, services
from training.models import ModelVersion, Round, TrainingRun


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the times the plots are drawn."""
    calls: list[int] = []
    draw = plots.loop_plots

    def counting(project: Project, live_run: TrainingRun | None) -> list[dict[str, Any]]:
        calls.append(project.pk)
        return draw(project, live_run)

    monkeypatch.setattr(plots, "loop_plots", counting)
    return calls


@pytest.fixture
def run(team: Any) -> TrainingRun:
    """Round 1 of the team's project, training its first attempt."""
    base = services.base_version(team.project)
    loop_round = Round.objects.create(
        project=team.project, number=1, policy=base, state=Round.State.TRAINING
    )
    return TrainingRun.objects.create(
        round=loop_round,
        version_number=1,
        state=TrainingRun.State.RUNNING,
        step=1,
        total_steps=4,
        losses=[0.69],
    )


def _poll(team: Any) -> str:
    """The plots of the status partial, as the page's poll gets it."""
    client = Client()
    client.force_login(team.lead)
    response = client.get(f"/projects/{team.project.pk}/loop/status/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    body = response.content.decode()
    return body[body.index('id="plots"') :]


def test_it_does_not_draw_the_plots_again_for_an_unchanged_loop(
    team: Any, run: TrainingRun, drawn: list[int]
) -> None:
    first = _poll(team)
    assert "<svg" in first
    assert _poll(team) == first
    assert drawn == [team.project.pk]


def test_it_draws_the_plots_again_after_a_training_step(
    team: Any, run: TrainingRun, drawn: list[int]
) -> None:
    assert "0.61" not in _poll(team)
    TrainingRun.objects.filter(pk=run.pk).update(step=2, losses=[0.69, 0.61])
    assert "0.61" in _poll(team)
    assert len(drawn) == 2
    _poll(team)
    assert len(drawn) == 2


def test_it_draws_the_plots_again_for_a_new_version(
    team: Any, run: TrainingRun, drawn: list[int]
) -> None:
    _poll(team)
    ModelVersion.objects.create(
        project=team.project,
        number=1,
        spec="demo",
        parent=run.round.policy,
        trained_in=run.round,
        metrics={"run": {"loss": 0.5}},
    )
    _poll(team)
    assert len(drawn) == 2


def test_it_draws_the_plots_again_after_an_eval_judgment(
    team: Any, run: TrainingRun, drawn: list[int]
) -> None:
    _poll(team)
    comparison = ComparisonFactory(project=team.project, round=1, kind=Comparison.Kind.EVAL)
    Judgment.objects.create(
        project=team.project,
        comparison=comparison,
        annotator=team.alice,
        choice=Judgment.Choice.A,
        left_is_a=True,
    )
    _poll(team)
    assert len(drawn) == 2


def test_it_counts_no_plot_queries_on_a_cached_poll(
    team: Any, run: TrainingRun, django_assert_max_num_queries: Any
) -> None:
    loop_round = run.round
    plots.cached_loop_plots(team.project, loop_round, run)
    # The key's two aggregates; drawing would also read the versions and each round's judgments.
    with django_assert_max_num_queries(2):
        plots.cached_loop_plots(team.project, loop_round, run)
