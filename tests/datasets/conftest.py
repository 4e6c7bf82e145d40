"""Helpers for dataset tests: files on disk, votes on comparisons, parsed exports."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.db.models import F

from annotate.datasets.imports import ImportReport, import_file
from annotate.models import Comparison, Judgment, Project

from ..factories import UserFactory


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def import_path(project: Project, fmt: str, path: Path, **options: Any) -> ImportReport:
    from annotate.datasets.formats import ImportOptions

    with path.open("rb") as fh:
        return import_file(
            project,
            fmt,
            fh,
            path.name,
            size=path.stat().st_size,
            options=ImportOptions.from_dict(options),
        )


def vote(
    comparison: Comparison,
    choice: str,
    annotator: Any = None,
    *,
    source: str = Judgment.Source.HUMAN,
    external: str = "",
    left_is_a: bool = True,
    **fields: Any,
) -> Judgment:
    if annotator is None and source == Judgment.Source.HUMAN:
        annotator = UserFactory()
    judgment = Judgment.objects.create(
        comparison=comparison,
        project=comparison.project,
        annotator=annotator,
        source=source,
        external_annotator=external,
        choice=choice,
        left_is_a=left_is_a,
        **fields,
    )
    Comparison.objects.filter(pk=comparison.pk).update(judgment_count=F("judgment_count") + 1)
    return judgment


def jsonl_rows(data: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in io.BytesIO(data).read().decode("utf-8").splitlines() if line
    ]


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
