"""A round in one process: sample, judge by rule, train, gate, promote."""

from __future__ import annotations

from typing import Any

import pytest

from annotate.errors import Conflict
from annotate.models import Comparison, Completion, Judgment
from training import services
from training.models import ModelVersion, ProjectLoop, Round, TrainingRun

from .conftest import judge_round


def _run_round(project: Any, rule: str = "shorter") -> Round:
    with services.in_process():
        run = judge_round(project, rule)
        services.train_round(run.pk)
    return Round.objects.get(pk=run.round_id)


def test_it_runs_a_round_and_promotes_the_new_version(loop_project: Any) -> None:
    loop_round = _run_round(loop_project)
    assert loop_round.state == Round.State.PROMOTED
    version = ModelVersion.objects.get(trained_in=loop_round)
    assert version.number == 1 and version.state == ModelVersion.State.SERVING
    assert services.serving_version(loop_project) == version
    assert (services.models_dir(loop_project) / "v1" / "prefloop_version.json").exists()
    run = TrainingRun.objects.get(round=loop_round)
    assert run.state == TrainingRun.State.SUCCEEDED and run.losses


def test_it_samples_the_next_round_from_the_promoted_version(loop_project: Any) -> None:
    first = _run_round(loop_project)
    with services.in_process():
        second = services.start_round(loop_project)
        services.generate_round(second.pk)
    v1 = ModelVersion.objects.get(trained_in=first)
    assert second.policy == v1
    train = Comparison.objects.filter(round=2, kind=Comparison.Kind.TRAIN)
    assert train.exists()
    for comparison in train:
        assert comparison.completion_a.model_version_id == v1.pk
        assert comparison.completion_a.generation_params["version"] == "v1"
    # eval comparisons pit v1 against the base on eval prompts
    evals = Comparison.objects.filter(round=2, kind=Comparison.Kind.EVAL)
    assert evals.exists()
    for comparison in evals:
        assert comparison.prompt.split == "eval"
        sides = {comparison.completion_a.model_version_id, comparison.completion_b.model_version_id}
        assert sides == {v1.pk, services.base_version(loop_project).pk}


def test_it_records_which_version_and_parameters_made_each_completion(loop_project: Any) -> None:
    with services.in_process():
        loop_round = services.start_round(loop_project)
        services.generate_round(loop_round.pk)
    completion = Completion.objects.filter(source=Completion.Source.MODEL).first()
    assert completion is not None
    assert completion.model_version_id == services.base_version(loop_project).pk
    assert completion.generation_params["temperature"] == 1.0
    assert completion.token_count and completion.logprob is not None


def test_it_generates_once_when_the_task_is_delivered_twice(loop_project: Any) -> None:
    with services.in_process():
        loop_round = services.start_round(loop_project)
        services.generate_round(loop_round.pk)
        count = Comparison.objects.filter(round=loop_round.number).count()
        assert services.generate_round(loop_round.pk).startswith("skipped")
    assert Comparison.objects.filter(round=loop_round.number).count() == count


def test_it_trains_and_promotes_once_when_delivered_twice(loop_project: Any) -> None:
    loop_round = _run_round(loop_project)
    run = TrainingRun.objects.get(round=loop_round)
    with services.in_process():
        assert services.train_round(run.pk).startswith("skipped")
        assert services.evaluate_round(loop_round.pk).startswith("skipped")
    assert ModelVersion.objects.filter(project=loop_project).count() == 2


def test_it_refuses_a_second_open_round(loop_project: Any) -> None:
    with services.in_process():
        services.start_round(loop_project)
        with pytest.raises(Conflict):
            services.start_round(loop_project)


def test_it_draws_prompts_without_repeats_until_the_pool_is_used(loop_project: Any) -> None:
    first = _run_round(loop_project)
    with services.in_process():
        second = services.start_round(loop_project)
    assert not set(first.prompt_ids) & set(second.prompt_ids)


def test_it_keeps_a_version_that_fails_the_gate_for_inspection(
    loop_project: Any, monkeypatch: Any
) -> None:
    import training.core.trainer

    ProjectLoop.store(
        loop_project, settings={**ProjectLoop.of(loop_project).settings, "gate_mode": "auto"}
    )
    real_train = training.core.trainer.train_dpo

    def worse(*args: Any, **kwargs: Any) -> Any:
        result = real_train(*args, **kwargs)
        result.heldout_before = {**result.heldout_before, "reward_accuracy": 1.0}
        result.heldout_after = {**result.heldout_after, "reward_accuracy": 0.0}
        return result

    monkeypatch.setattr(training.core.trainer, "train_dpo", worse)
    loop_round = _run_round(loop_project)
    version = ModelVersion.objects.get(trained_in=loop_round)
    assert loop_round.state == Round.State.REJECTED
    assert version.state == ModelVersion.State.REJECTED
    assert "reward accuracy fell from 1.00 to 0.00" in loop_round.error
    assert version.gate["passed"] is False
    assert services.serving_version(loop_project).number == 0


def test_it_fails_the_run_and_keeps_judgments_when_training_raises(
    loop_project: Any, monkeypatch: Any
) -> None:
    import training.core.trainer

    with services.in_process():
        loop_round = services.start_round(loop_project)
        services.generate_round(loop_round.pk)
        services.simulate_annotators(loop_project, "shorter", annotators=1, noise=0.0)
        run = services.begin_training(Round.objects.get(pk=loop_round.pk))
    judgments = Judgment.objects.count()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(training.core.trainer, "train_dpo", boom)
    with pytest.raises(RuntimeError), services.in_process():
        services.train_round(run.pk)
    run.refresh_from_db()
    loop_round.refresh_from_db()
    assert run.state == TrainingRun.State.FAILED and "out of memory" in run.error
    assert loop_round.state == Round.State.FAILED
    assert Judgment.objects.count() == judgments
    assert services.serving_version(loop_project).number == 0

    monkeypatch.undo()
    with services.in_process():
        services.retry(loop_round)
        retry_run = TrainingRun.objects.get(round=loop_round, attempt=2)
        assert retry_run.version_number == run.version_number
        services.train_round(retry_run.pk)
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.PROMOTED
    assert services.serving_version(loop_project).number == 1


def test_it_rolls_back_to_an_older_version(loop_project: Any) -> None:
    _run_round(loop_project)
    base = services.base_version(loop_project)
    assert services.promote(base)
    assert services.serving_version(loop_project) == base
    assert ModelVersion.objects.get(number=1, project=loop_project).state == "retired"
    assert not services.promote(base)


def test_it_does_not_reject_a_drop_within_sampling_noise() -> None:
    from training.loop_settings import LoopSettings
    from training.services.gate import heldout_check

    version = ModelVersion(
        metrics={
            "num_heldout_pairs": 7,
            "heldout_before": {"reward_accuracy": 0.71, "chosen_logp": -40.0},
            "heldout_after": {"reward_accuracy": 0.43, "chosen_logp": -41.0},
        }
    )
    assert heldout_check(version, LoopSettings())["passed"] is True
    version.metrics["num_heldout_pairs"] = 400
    result = heldout_check(version, LoopSettings())
    assert result["passed"] is False
    assert "fell from 0.71 to 0.43" in result["reasons"][0]
