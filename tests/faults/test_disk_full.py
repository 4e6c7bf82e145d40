"""The disk full while a version is written, locally or into the model store.

The full disk is simulated: the weights' writer (safetensors, wherever transformers and peft
bound it) and the store's file copy raise ENOSPC after writing part of a file. The attempt
must fail with an error that says so, leave no directory and no version row behind, keep the
previous version serving, and train once there is room again.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
from django.db import connection

from annotate.models import Project
from tests.loop.conftest import judge_round
from training import services
from training.core.store import ModelStore
from training.models import ModelVersion, Round, TrainingRun

from .integrity import assert_integrity

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _no_space() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


FULL = {"disk": False}


@pytest.fixture(autouse=True)
def _room_again() -> Iterator[None]:
    yield
    FULL["disk"] = False


def _fill_disk_on_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    original = safetensors.torch.save_file

    def save_file(tensors: Any, filename: Any, metadata: Any = None) -> None:
        if not FULL["disk"]:
            return original(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 4096)  # part of the file made it
        raise _no_space()

    # modules imported later bind the replacement too: it writes normally once there is room
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    for module in list(sys.modules.values()):
        for name in ("save_file", "safe_save_file"):
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, save_file)


def _fill_disk_on_store(monkeypatch: pytest.MonkeyPatch) -> None:
    put = ModelStore._put
    calls = []

    def full_put(fs: Any, local: Path, remote: str, suffix: str) -> None:
        calls.append(remote)
        if FULL["disk"] and len(calls) > 1:  # the first file went up, then the disk filled
            with open(remote + suffix, "wb") as out:
                out.write(local.read_bytes()[:100])
            raise _no_space()
        put(fs, local, remote, suffix)

    monkeypatch.setattr(ModelStore, "_put", staticmethod(full_put))


def _trained_round(project: Project) -> tuple[Round, TrainingRun]:
    with services.in_process():
        run = judge_round(project)
    return Round.objects.get(pk=run.round_id), run


def _check(project: Project, *dirs: Path) -> None:
    with connection.cursor() as cursor:
        for directory in dirs:
            assert_integrity(cursor, project.pk, models_dir=directory)


@pytest.mark.parametrize("where", ["weights", "store"])
def test_a_full_disk_fails_the_attempt_and_leaves_nothing_behind(
    loop_project: Project,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    tmp_path: Path,
    where: str,
) -> None:
    store = tmp_path / "store"
    FULL["disk"] = True
    if where == "store":
        settings.PREFLOOP_MODEL_STORE = str(store)
        _fill_disk_on_store(monkeypatch)
    else:
        _fill_disk_on_weights(monkeypatch)
    loop_round, run = _trained_round(loop_project)

    with services.in_process(), pytest.raises(OSError) as raised:
        services.train_round(run.pk)
    assert raised.value.errno == errno.ENOSPC

    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.FAILED
    assert "No space left on device" in loop_round.error
    assert TrainingRun.objects.get(pk=run.pk).state == TrainingRun.State.FAILED
    assert not ModelVersion.objects.filter(trained_in=loop_round).exists()
    assert services.serving_version(loop_project).number == 0
    local = services.models_dir(loop_project)
    assert not local.exists() or not list(local.iterdir()), list(local.iterdir())
    stored = store / loop_project.slug
    assert not stored.exists() or not list(stored.rglob("*")), list(stored.rglob("*"))
    _check(loop_project, local, stored)

    # with room again, the retry trains and promotes once
    FULL["disk"] = False
    monkeypatch.undo()
    if where == "store":
        settings.PREFLOOP_MODEL_STORE = str(store)
    with services.in_process():
        services.retry(loop_round)
        services.train_round(TrainingRun.objects.get(round=loop_round, attempt=2).pk)
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.PROMOTED
    assert services.serving_version(loop_project).number == 1
    _check(loop_project, local)
