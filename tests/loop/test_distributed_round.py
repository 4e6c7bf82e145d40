"""A round whose ``dpo.num_processes`` is 2 trains on two processes of the worker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from training import services
from training.models import ModelVersion, Round, TrainingRun
from training.services import parallel_training

from .conftest import TINY_LOOP, judge_round, make_loop_project


@pytest.mark.slow
def test_a_round_trains_on_two_processes(
    db: Any, tiny_model_dir: Any, var_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_loop_project(
        tiny_model_dir, dpo={**TINY_LOOP["dpo"], "num_processes": 2, "device": "cpu"}
    )
    commands: list[list[str]] = []
    real_popen = parallel_training.subprocess.Popen

    def popen(command: list[str], **kwargs: Any) -> Any:
        commands.append(command)
        return real_popen(command, **kwargs)

    monkeypatch.setattr(parallel_training.subprocess, "Popen", popen)
    steps: list[int] = []
    with services.in_process():
        run = judge_round(project)
        services.train_round(run.pk, progress=lambda step, *_: steps.append(step))
    assert len(commands) == 1 and commands[0][commands[0].index("--nproc") + 1] == "2"
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.state == TrainingRun.State.SUCCEEDED, run.error
    assert run.metrics["num_processes"] == 2 and run.config["num_processes"] == 2
    assert steps == list(range(1, run.step + 1)) and len(run.losses) == run.step
    version = ModelVersion.objects.get(trained_in=run.round)
    saved = services.models_dir(project) / "v1"
    assert (saved / "prefloop_version.json").exists()
    assert json.loads((saved / "training_config.json").read_text())["num_processes"] == 2
    assert version.metrics["num_processes"] == 2
    # rank 0 wrote the one version; nothing half-written is left beside it
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".")] == []

    # round 2 is sampled and trained from v1, a version in the model store (`store:` spec):
    # the ranks find it through the worker's store and cache
    assert version.spec.startswith("store:")
    if services.serving_version(project) != version:
        services.promote(version)
    with services.in_process():
        second = Round.objects.filter(project=project, number=2).first()
        if second is None:
            second = services.start_round(project)
        if second.state == Round.State.GENERATING:
            services.generate_round(second.pk)
        services.simulate_annotators(
            project, "shorter", annotators=1, noise=0.0, round_number=second.number
        )
        run2 = services.begin_training(Round.objects.get(pk=second.pk))
        services.train_round(run2.pk)
    assert commands[-1][commands[-1].index("--model") + 1] == version.spec
    run2 = TrainingRun.objects.get(pk=run2.pk)
    assert run2.state == TrainingRun.State.SUCCEEDED, run2.error


@pytest.mark.slow
def test_a_failed_parallel_run_fails_the_attempt_with_the_processes_error(
    db: Any, tiny_model_dir: Any, var_dir: Any
) -> None:
    project = make_loop_project(
        tiny_model_dir, dpo={**TINY_LOOP["dpo"], "num_processes": 2, "device": "cpu"}
    )
    with services.in_process():
        run = judge_round(project)
        loop_round = run.round
    # the policy's weights vanish between queueing and training: every rank fails to load them
    loop_round = Round.objects.get(pk=loop_round.pk)
    policy = loop_round.policy
    policy.spec = str(var_dir / "missing-model")
    policy.save(update_fields=["spec"])
    with pytest.raises(parallel_training.ParallelTrainingError, match="2 processes failed"):
        services.train_round(run.pk)
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.state == TrainingRun.State.FAILED and "missing-model" in run.error
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.FAILED
    assert not (services.models_dir(project) / "v1").exists()


@pytest.mark.parametrize(
    "value,message",
    [(0, "must be at least 1"), (65, "must be at most 64"), ("2", "expected integer")],
)
def test_num_processes_is_checked_and_documented(value: Any, message: str) -> None:
    from django.core.exceptions import ValidationError

    from training.loop_bounds import check_dpo_fields, dpo_schema

    with pytest.raises(ValidationError, match=f"dpo.num_processes: {message}"):
        check_dpo_fields({"num_processes": value})
    prop = dpo_schema()["properties"]["num_processes"]
    assert (prop["type"], prop["default"], prop["minimum"], prop["maximum"]) == (
        "integer",
        1,
        1,
        64,
    )
