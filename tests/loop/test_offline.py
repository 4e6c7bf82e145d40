"""`run_rounds --offline`: the online rounds' judgment budget spent on base samples in one run."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Comparison, Judgment, Project
from training import services
from training.core.config import DPOConfig
from training.loop_settings import LoopSettings
from training.models import ModelVersion, Round, TrainingRun
from training.services.offline import step_matched_dpo, train_pair_count

from .conftest import make_loop_project

pytestmark = pytest.mark.slow


def run_rounds(project: Project, *args: str) -> str:
    out = io.StringIO()
    call_command(
        "run_rounds",
        project.slug,
        "--simulate", "longer",
        "--annotators", "3",
        "--noise", "0.1",
        "--eval-prompts", "0",
        *args,
        stdout=out,
    )  # fmt: skip
    return out.getvalue()


def train_judgments(project: Project, numbers: list[int]) -> int:
    return Judgment.objects.filter(
        comparison__project=project,
        comparison__round__in=numbers,
        comparison__kind=Comparison.Kind.TRAIN,
    ).count()


def succeeded(loop_round: Round) -> TrainingRun:
    return TrainingRun.objects.get(round=loop_round, state=TrainingRun.State.SUCCEEDED)


@pytest.fixture
def online_project(db: Any, tiny_model_dir: Path, var_dir: Path) -> Project:
    """Two online rounds of the tiny model, three annotators on every comparison."""
    project = make_loop_project(tiny_model_dir)
    project.overlap = 3
    project.save(update_fields=["overlap"])
    run_rounds(project, "--rounds", "2", "--seed", "3")
    assert Round.objects.filter(project=project, state=Round.State.PROMOTED).count() == 2
    return project


def test_it_trains_one_version_from_the_base_at_the_online_budget(online_project: Any) -> None:
    project = online_project
    online = list(Round.objects.filter(project=project).order_by("number"))
    online_steps = sum(succeeded(r).step for r in online)

    out = run_rounds(project, "--rounds", "2", "--seed", "3", "--offline")

    offline = Round.objects.get(project=project, number=3)
    base = services.base_version(project)
    version = ModelVersion.objects.get(trained_in=offline)
    assert ModelVersion.objects.filter(project=project).count() == 4  # base, v1, v2, offline
    assert offline.policy == base and version.parent == base
    run = succeeded(offline)
    # trained against the base reference from the base's own samples
    assert run.metrics["reference"] == str(Path(base.spec).absolute())
    sampled_by = {c.completion_a.model_version_id for c in Comparison.objects.filter(round=3)}
    assert sampled_by == {base.pk}
    # the online rounds' prompts, no eval comparisons, no replay of the online pairs
    assert sorted(offline.prompt_ids) == sorted({p for r in online for p in r.prompt_ids})
    assert not Comparison.objects.filter(project=project, round=3, kind=Comparison.Kind.EVAL)
    assert run.num_pairs <= Comparison.objects.filter(project=project, round=3).count()
    # the same judgments and the same optimizer steps, under one schedule
    assert train_judgments(project, [3]) == train_judgments(project, [1, 2]) > 0
    assert run.step == online_steps == run.config["max_steps"]
    assert run.total_steps == online_steps
    assert f"{online_steps} optimizer steps (online {online_steps}; same steps)" in out


def test_same_epochs_matches_the_online_epochs(online_project: Any) -> None:
    project = online_project
    online_epochs = succeeded(Round.objects.get(project=project, number=1)).config["epochs"]

    out = run_rounds(project, "--rounds", "2", "--offline", "--same-epochs")

    run = succeeded(Round.objects.get(project=project, number=3))
    config = DPOConfig.from_dict(run.config)
    assert config.epochs == online_epochs and config.max_steps is None
    pairs, _ = services.round_pairs(run.round, LoopSettings.from_dict(run.round.settings))
    trained = train_pair_count(pairs, config)
    assert run.step == math.ceil(math.ceil(trained / config.batch_size) * config.epochs)
    assert "same epochs" in out


def test_step_matching_reaches_the_online_steps_exactly() -> None:
    config = DPOConfig(batch_size=4, grad_accum_steps=2, epochs=2)
    # 10 pairs: 3 micro-batches per epoch; 7 steps of 2 micro-batches need 5 epochs
    assert step_matched_dpo(config, 10, 7, same_epochs=False) == {"epochs": 5, "max_steps": 7}
    assert step_matched_dpo(config, 10, 7, same_epochs=True) == {"epochs": 2, "max_steps": None}


def test_it_refuses_offline_before_the_online_rounds(loop_project: Any) -> None:
    with pytest.raises(CommandError, match="first 2 online round"):
        run_rounds(loop_project, "--rounds", "2", "--offline")
    assert not Round.objects.filter(project=loop_project).exists()


def test_same_epochs_needs_offline(loop_project: Any) -> None:
    with pytest.raises(CommandError, match="--same-epochs goes with --offline"):
        run_rounds(loop_project, "--same-epochs")


def judged(project: Project) -> list[tuple[int, str, str, str, str]]:
    """Every judgment as (round, prompt, text A, text B, choice), in judging order."""
    return [
        (
            j.comparison.round or 0,
            j.comparison.prompt.messages[0]["content"],
            j.comparison.completion_a.text,
            j.comparison.completion_b.text,
            j.choice,
        )
        for j in Judgment.objects.filter(project=project)
        .select_related(
            "comparison__prompt", "comparison__completion_a", "comparison__completion_b"
        )
        .order_by("pk")
    ]


@pytest.mark.django_db
def test_a_seed_makes_two_runs_judge_the_same(tiny_model_dir: Path, var_dir: Path) -> None:
    # Every round draws all eight train prompts, so the projects' row ids decide nothing.
    runs = []
    for seed in ("5", "5", "6"):
        project = make_loop_project(tiny_model_dir, prompts_per_round=8)
        project.overlap = 2
        project.slug = f"seeded-{len(runs)}"  # each run's versions in a directory of its own
        project.save(update_fields=["overlap", "slug"])
        run_rounds(project, "--rounds", "2", "--seed", seed)
        assert services.loop_settings(project).seed == int(seed)
        assert DPOConfig.from_dict(services.loop_settings(project).dpo).seed == int(seed)
        runs.append(judged(project))
        # the next project's lead takes the same name
        get_user_model().objects.filter(username="loop-lead").update(
            username=f"loop-lead-{len(runs)}"
        )
    assert len(runs[0]) > 8 and {r[0] for r in runs[0]} == {1, 2}
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
