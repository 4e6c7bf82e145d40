"""How the loop's services queue Celery tasks: by name, once the transaction commits.

Services name the task (``"training.tasks.train_round"``) instead of importing
``training.tasks``, because the tasks module imports the services. The message goes out only
after the surrounding transaction commits, so a worker never looks for a row that is not there
yet, and a rolled-back write queues nothing. Routing (``CELERY_TASK_ROUTES``) goes by these names.

A message that cannot be sent (the broker is down) is logged and dropped, never raised: the
write it follows has committed, and the request that made it (often an annotator's judgment)
must not fail for it. The rows say what is owed, and the beat's ``recover_stuck_rounds``
(``training.services.recovery``) sends it again once the broker is back.

Drivers that run every step of a round themselves, the ``run_rounds`` command and the tests,
wrap their calls in ``in_process()``: inside it nothing is queued, judgments saved do not check
the trigger, and a promoted round does not start the next one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

GENERATE_ROUND = "training.tasks.generate_round"
TRAIN_ROUND = "training.tasks.train_round"

_enqueuing: ContextVar[bool] = ContextVar("training_enqueuing", default=True)


@contextlib.contextmanager
def in_process() -> Iterator[None]:
    """Queue no task from the services called inside this block; the caller drives each step."""
    token = _enqueuing.set(False)
    try:
        yield
    finally:
        _enqueuing.reset(token)


def enqueuing() -> bool:
    """False inside ``in_process()``."""
    return _enqueuing.get()


def on_commit(action: Callable[[], None]) -> None:
    """Run ``action`` once the transaction commits, unless inside ``in_process()``."""
    if enqueuing():
        transaction.on_commit(action)


def enqueue(task_name: str, *args: int) -> None:
    """Queue the task ``task_name`` with ``args`` once the transaction commits."""
    on_commit(lambda: _send(task_name, args))


def _send(task_name: str, args: tuple[int, ...]) -> None:
    app = current_app
    if app.conf.task_always_eager and task_name not in app.tasks:
        # send_task ignores eager mode: load the task modules so the task runs here instead
        app.autodiscover_tasks(force=True)
    # a known task is applied through its own apply_async (eager mode and all); an unknown one
    # is sent to the broker by name
    try:
        app.signature(task_name, args=args).apply_async()
    except (OperationalError, ConnectionError) as exc:
        log.warning("could not queue %s%r, the beat will send it again: %s", task_name, args, exc)
