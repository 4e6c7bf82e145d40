"""Services queue the loop's tasks by name once the transaction commits, or not at all."""

from __future__ import annotations

from typing import Any

import pytest

from annotate.celery import app
from annotate.models import Project
from training import services


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[Any]]]:
    """Messages given to the broker, as (task name, args)."""
    out: list[tuple[str, list[Any]]] = []

    def send_task(name: str, args: Any = None, *rest: Any, **options: Any) -> None:
        out.append((name, list(args or ())))

    monkeypatch.setattr(app, "send_task", send_task)
    return out


def test_it_queues_sampling_by_name_after_the_commit(
    loop_project: Project,
    sent: list[tuple[str, list[Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        loop_round = services.start_round(loop_project)
    assert sent == []
    for callback in callbacks:
        callback()
    assert sent == [("training.tasks.generate_round", [loop_round.pk])]


def test_it_queues_nothing_in_process(
    loop_project: Project,
    sent: list[tuple[str, list[Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks, services.in_process():
        services.start_round(loop_project)
    assert callbacks == [] and sent == []
