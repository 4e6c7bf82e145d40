"""`manage.py run_rounds --via-worker`: a whole round through a real `celery worker` process."""

from __future__ import annotations

import io
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from training import services
from training.models import ModelVersion, Round, TrainingRun

from .conftest import make_loop_project
from .test_worker import Worker


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_runs_a_round_via_the_worker_and_prints_its_row(tiny_model_dir: Path) -> None:
    # The worker reads settings.VAR_DIR from the environment, so versions go to the real
    # var/models under a slug of their own, removed afterwards.
    project = make_loop_project(tiny_model_dir, auto_next_round=False)
    project.slug = f"loop-{uuid.uuid4().hex[:10]}"
    project.save(update_fields=["slug"])
    worker = Worker()
    out = io.StringIO()
    try:
        worker.start()
        call_command(
            "run_rounds",
            project.slug,
            "--rounds", "1",
            "--simulate", "shorter",
            "--annotators", "2",
            "--noise", "0",
            "--eval-prompts", "2",
            "--via-worker",
            "--timeout", "240",
            stdout=out,
        )  # fmt: skip
    except CommandError as exc:
        pytest.fail(f"{exc}; worker log:\n{worker.output()[-4000:]}")
    finally:
        worker.stop()
        log = worker.output()
        worker.log.unlink(missing_ok=True)
        shutil.rmtree(services.models_dir(project), ignore_errors=True)

    loop_round = Round.objects.get(project=project)
    assert loop_round.number == 1 and loop_round.state == Round.State.PROMOTED
    version = ModelVersion.objects.get(trained_in=loop_round)
    assert version.number == 1 and version.state == ModelVersion.State.SERVING
    run = TrainingRun.objects.get(round=loop_round, state=TrainingRun.State.SUCCEEDED)
    assert run.num_pairs > 0 and run.losses

    header, row = out.getvalue().splitlines()
    assert header.split()[:4] == ["round", "version", "state", "pairs"]
    number, label, state, pairs, _train_s, _accuracy, win, low, high, n = row.split()
    assert (number, label, state, int(pairs)) == ("1", "v1", "promoted", run.num_pairs)
    # the win rate over the base with its prompt-clustered interval and the prompts behind it
    low, high = float(low.strip("[,")), float(high.strip("],"))
    assert 0.0 <= low <= float(win) <= high <= 1.0
    assert n.startswith("n=") and int(n[2:]) > 0
    # generation and training ran in the worker, not in this process
    assert "training.tasks.generate_round" in log and "training.tasks.train_round" in log
    assert not Round.objects.filter(project=project, number=2).exists()


def test_it_refuses_an_unknown_rule_before_starting_a_round(loop_project: Any) -> None:
    with pytest.raises(CommandError):
        call_command(
            "run_rounds",
            loop_project.slug,
            "--simulate",
            "kindest",
            "--via-worker",
            stdout=io.StringIO(),
        )
    assert not Round.objects.filter(project=loop_project).exists()
