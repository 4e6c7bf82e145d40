"""Importing prompts and ready-made pairs into a project.

The readers and writers live in ``annotate.datasets``; this module keeps the JSONL and
JSON-list entry points the annotation views, the API and the demo use. Every import is
one transaction: the first bad row rolls the whole file back with a message naming its
line and field. Duplicate prompts (same messages) are skipped and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

from .datasets.errors import RowError
from .datasets.formats import prompt_messages
from .datasets.imports import ImportReport, import_rows
from .datasets.readers import read_jsonl as iter_jsonl
from .errors import InvalidInput
from .models import Project

KINDS = ("prompts", "pairs")

__all__ = ["KINDS", "ImportReport", "RowError", "import_jsonl", "import_records", "iter_jsonl"]


def parse_messages(line: int, row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat of a row: ``messages`` (a list of turns) or ``prompt`` (one user turn)."""
    return prompt_messages(line, row, tabular=False)


def import_jsonl(
    project: Project, kind: str, stream: IO[bytes] | Iterable[bytes | str]
) -> ImportReport:
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    return import_rows(project, kind, iter_jsonl(stream))


def import_records(project: Project, kind: str, records: list[Any]) -> ImportReport:
    """Import a JSON list (the API's body); item i is reported as item i."""
    if not isinstance(records, list):
        raise InvalidInput("Send a JSON list of objects.")
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if not records:
        raise InvalidInput("The list is empty.")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, item in enumerate(records, start=1):
            if not isinstance(item, dict):
                raise RowError(i, "each item must be a JSON object", unit="item")
            yield i, item

    return import_rows(project, kind, rows(), unit="item")
