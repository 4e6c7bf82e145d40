"""A Celery worker SIGKILLed while it samples a round, writes a version or gates it.

Each test stops a real worker (``held_worker``) at one point of the task, kills it there, and
checks what it left: the previous version still serving, no version directory without its row,
nothing recorded twice. Then the round is carried on as a deployment would (the beat's sweep, or
the lead's retry) by a fresh worker, and ends promoted exactly once.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from annotate.models import Comparison, Completion, Project
from tests.loop.conftest import make_loop_project
from tests.processes import database_url
from training import services
from training.models import ModelVersion, ProjectLoop, Round, TrainingRun

from .conftest import Process, wait_for, worker_args
from .integrity import assert_integrity

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def project(transactional_db: Any, tiny_model_dir: Path) -> Iterator[Project]:
    # The worker reads VAR_DIR from the environment: versions go under var/models/<slug>.
    project = make_loop_project(tiny_model_dir)
    project.slug = f"faults-{uuid.uuid4().hex[:10]}"
    project.save(update_fields=["slug"])
    settings = {**ProjectLoop.of(project).settings, "auto_next_round": False}
    ProjectLoop.store(project, settings=settings)
    yield project
    shutil.rmtree(services.models_dir(project), ignore_errors=True)


def _start(processes: Callable[..., Process], hold: tuple[str, Path] | None = None) -> Process:
    return processes(worker_args(hold), {"DATABASE_URL": database_url()})


def _in(**delta: float) -> datetime:
    return timezone.now() + timedelta(**delta)


def _state(loop_round: Round) -> str:
    return Round.objects.get(pk=loop_round.pk).state


def _check(project: Project, *, settled: bool = True) -> None:
    with connection.cursor() as cursor:
        assert_integrity(
            cursor, project.pk, models_dir=services.models_dir(project), settled=settled
        )


def _collect(project: Project, loop_round: Round, worker: Process) -> None:
    wait_for("sampling", lambda: _state(loop_round) == Round.State.COLLECTING, worker)
    services.simulate_annotators(project, "shorter", annotators=2, noise=0.0)


def test_it_resumes_a_round_whose_worker_died_while_sampling(
    project: Project, processes: Callable[..., Process], tmp_path: Path, settings: Any
) -> None:
    mark = tmp_path / "mark"
    held = _start(processes, ("generate", mark))
    loop_round = services.start_round(project)
    wait_for("the first sampled rows", mark.exists, held)
    held.kill()

    assert _state(loop_round) == Round.State.GENERATING
    kept = Completion.objects.filter(
        round_number=loop_round.number, prompt__project=project
    ).count()
    assert kept > 0
    assert not Comparison.objects.filter(project=project).exists()
    _check(project)

    # the beat's sweep finds the round stuck and queues its sampling again
    settings.PREFLOOP_ROUND_STALE_SECONDS = 60
    assert services.recover_stuck_rounds() == 0  # it may only be slow
    assert services.recover_stuck_rounds(now=_in(minutes=2)) == 1
    assert services.recover_stuck_rounds(now=_in(seconds=30)) == 0  # touched: not again soon
    worker = _start(processes)
    wait_for(
        "sampling after recovery", lambda: _state(loop_round) == Round.State.COLLECTING, worker
    )
    ls = loop_round.settings
    prompts, evals = len(loop_round.prompt_ids), len(loop_round.eval_prompt_ids)
    completions = Completion.objects.filter(round_number=loop_round.number, prompt__project=project)
    assert completions.count() == ls["k"] * prompts + 2 * evals
    assert Comparison.objects.filter(project=project, kind="eval").count() == evals
    _check(project)


def test_it_leaves_no_half_written_version_when_killed_while_writing_it(
    project: Project, processes: Callable[..., Process], tmp_path: Path
) -> None:
    mark = tmp_path / "mark"
    held = _start(processes, ("write", mark))
    loop_round = services.start_round(project)
    _collect(project, loop_round, held)
    wait_for("the version half written", mark.exists, held)
    held.kill()

    versions = services.models_dir(project)
    assert [p.name for p in versions.iterdir() if p.name.startswith(".v1.tmp-")]
    assert not (versions / "v1").exists()
    assert not ModelVersion.objects.filter(trained_in=loop_round).exists()
    assert services.serving_version(project).number == 0
    _check(project, settled=False)

    # the beat fails the lost attempt; the lead retries it on a fresh worker
    assert services.fail_lost_runs() == 1
    assert _state(loop_round) == Round.State.FAILED
    services.retry(Round.objects.get(pk=loop_round.pk))
    worker = _start(processes)
    wait_for("promotion after retry", lambda: _state(loop_round) == Round.State.PROMOTED, worker)
    assert TrainingRun.objects.filter(round=loop_round, state="succeeded").count() == 1
    assert services.serving_version(project).number == 1
    _check(project)


def test_it_gates_a_round_whose_worker_died_while_gating(
    project: Project, processes: Callable[..., Process], tmp_path: Path
) -> None:
    mark = tmp_path / "mark"
    held = _start(processes, ("gate", mark))
    loop_round = services.start_round(project)
    _collect(project, loop_round, held)
    wait_for("the gate", mark.exists, held)
    held.kill()

    assert _state(loop_round) == Round.State.EVALUATING
    assert ModelVersion.objects.get(trained_in=loop_round).state == "candidate"
    assert services.serving_version(project).number == 0
    assert services.fail_lost_runs() == 0  # the training run itself succeeded
    _check(project)

    assert services.recover_stuck_rounds(now=_in(minutes=5)) == 0  # the gate may be slow
    assert services.recover_stuck_rounds(now=_in(hours=1)) == 1
    worker = _start(processes)
    wait_for("promotion after recovery", lambda: _state(loop_round) == "promoted", worker)
    assert services.serving_version(project).number == 1
    assert ModelVersion.objects.filter(project=project).count() == 2
    _check(project)
