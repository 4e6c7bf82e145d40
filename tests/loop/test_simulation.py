"""Simulated annotators and their rules; pair aggregation."""

from __future__ import annotations

import pytest

from annotate.errors import InvalidInput
from annotate.models import Assignment, Judgment
from tests.factories import ComparisonFactory, CompletionFactory, ProjectFactory, PromptFactory
from training import services
from training.loop_settings import LoopSettings
from training.services.simulation import contains, longer, no_lists, shorter


def test_it_applies_the_named_rules() -> None:
    assert shorter([], "ok", "much longer") == "a"
    assert longer([], "ok", "much longer") == "b"
    assert no_lists([], "- one\n- two", "plain prose") == "b"
    assert contains("please")([], "no", "Please do") == "b"
    assert shorter([], "same", "same") == "tie"
    assert services.resolve_rule("training.services.simulation.shorter") is shorter
    with pytest.raises(InvalidInput):
        services.resolve_rule("kindest")


@pytest.mark.django_db
def test_it_judges_through_the_queue_as_simulated_users() -> None:
    project = ProjectFactory(overlap=2)
    for i in range(3):
        prompt = PromptFactory(project=project)
        ComparisonFactory(
            project=project,
            prompt=prompt,
            completion_a=CompletionFactory(prompt=prompt, text="short"),
            completion_b=CompletionFactory(prompt=prompt, text=f"a much longer answer {i}"),
        )
    report = services.simulate_annotators(project, "shorter", annotators=3, noise=0.0)
    assert report.judged == 6
    judgments = Judgment.objects.filter(project=project)
    assert {j.source for j in judgments} == {Judgment.Source.SIMULATED}
    assert {j.choice for j in judgments} == {Judgment.Choice.A}
    assert all(j.annotator.username.startswith(f"sim-{project.slug}-") for j in judgments)


@pytest.mark.django_db
def test_it_judges_one_rounds_pairs_without_skipping_the_others() -> None:
    project = ProjectFactory(overlap=1)
    old = [ComparisonFactory(project=project, round=1) for _ in range(2)]
    current = [ComparisonFactory(project=project, round=2) for _ in range(2)]
    report = services.simulate_annotators(
        project, "shorter", annotators=2, noise=0.0, round_number=1
    )
    assert report.judged == 2
    assert {j.comparison_id for j in Judgment.objects.all()} == {c.pk for c in old}
    # The other round's pairs were never handed out, let alone skipped.
    assert not Assignment.objects.filter(comparison__in=current).exists()
    assert not Assignment.objects.filter(skips__gt=0).exists()


@pytest.mark.django_db
def test_it_aggregates_by_majority_and_weights_by_agreement() -> None:
    project = ProjectFactory(overlap=3)
    comparison = ComparisonFactory(project=project)
    choices = iter(["a", "a", "b"])
    services.simulate_annotators(project, lambda m, a, b: next(choices), annotators=3, noise=0.0)
    plain = services.aggregate([comparison], LoopSettings())
    assert plain[0].chosen == comparison.completion_a.text and plain[0].weight == 1.0
    weighted = services.aggregate([comparison], LoopSettings(agreement_weight=True))
    assert weighted[0].weight == pytest.approx(2 / 3)


def test_it_computes_a_wilson_interval() -> None:
    rate = services.WinRate(wins=8, losses=2, ties=0)
    low, high = rate.interval() or (0, 0)
    assert rate.rate == 0.8 and 0.49 < low < 0.5 and 0.94 < high < 0.95
