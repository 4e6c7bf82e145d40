"""A Celery worker that stops for good at one point of a loop task, for a test to kill it there.

    python -m tests.faults.held_worker <point> <mark file> <celery worker arguments...>

Points: ``generate`` (after the round's first sampled rows are stored), ``write`` (inside a
version's temporary directory, its weights written and its manifest not yet) and ``gate``
(the version recorded, its gate begun). On reaching the point the worker writes the point's
name to the mark file and sleeps until it is killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def _hold(point: str, mark: Path) -> None:
    mark.write_text(point)
    while True:
        time.sleep(1)


def _install(point: str, mark: Path) -> None:
    if point == "generate":
        from training.services import generation

        report = generation._RoundWriter.report

        def held_report(self: Any, final: bool = False) -> None:
            report(self, final)
            if self.rows and not final:
                _hold(point, mark)

        generation._RoundWriter.report = held_report  # type: ignore[method-assign]
    elif point == "write":
        from training.core import versions

        write_json = versions._write_json

        def held_write_json(path: Path, data: Any) -> None:
            write_json(path, data)
            if path.name == "metrics.json":
                _hold(point, mark)

        versions._write_json = held_write_json
    elif point == "gate":
        from training.services import gate

        def held_gate(*args: Any) -> None:
            _hold(point, mark)

        gate._gate = held_gate
    else:
        raise SystemExit(f"unknown point {point!r}")


def main() -> None:
    point, mark, *celery_args = sys.argv[1:]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")
    import django

    django.setup()
    _install(point, Path(mark))
    from celery.__main__ import main as celery_main

    sys.argv = ["celery", *celery_args]
    celery_main()


if __name__ == "__main__":
    main()
