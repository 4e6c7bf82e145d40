"""The one integrity check every fault test ends with.

It reads the database through a plain DB-API cursor (Django's, or psycopg's on a private
server the test process has no Django connection to), so that the same SQL judges SQLite and
PostgreSQL alike:

- no pair over its overlap (gold pairs are served beyond it on purpose), and every pair's
  ``judgment_count`` equals its judgments;
- nobody twice on a pair;
- every acknowledged submit (client_id -> comparison) stored exactly once, on that pair;
- no dangling lease: no live lease on a pair its holder has judged, and no "judged" assignment
  without its judgment;
- with ``models_dir``: at most one version serving; each trained version recorded once per
  round and complete on disk (every file of its manifest there, at its size); no version
  directory without its row; with ``settled``, no temporary directory left either.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST = "prefloop_version.json"


def _rows(cursor: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    cursor.execute(sql, params)
    return list(cursor.fetchall())


def judgment_violations(
    cursor: Any, project_id: int, acknowledged: Mapping[str, int] | None = None
) -> list[str]:
    found: list[str] = []
    over = _rows(
        cursor,
        """
        SELECT c.id, c.kind, c.judgment_count, COUNT(j.id), p.overlap
        FROM annotate_comparison c
        JOIN annotate_project p ON p.id = c.project_id
        LEFT JOIN annotate_judgment j ON j.comparison_id = c.id
        WHERE c.project_id = %s
        GROUP BY c.id, c.kind, c.judgment_count, p.overlap
        HAVING (COUNT(j.id) > p.overlap AND c.kind <> 'gold') OR COUNT(j.id) <> c.judgment_count
        """,
        [project_id],
    )
    found += [f"pair {c}: {n} judgments, count {count}, overlap {o}" for c, _, count, n, o in over]
    twice = _rows(
        cursor,
        """
        SELECT comparison_id, annotator_id, COUNT(*) FROM annotate_judgment
        WHERE project_id = %s AND annotator_id IS NOT NULL
        GROUP BY comparison_id, annotator_id HAVING COUNT(*) > 1
        """,
        [project_id],
    )
    found += [f"annotator {a} judged pair {c} {n} times" for c, a, n in twice]
    if acknowledged:
        ids = list(acknowledged)
        stored: dict[str, list[int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            for client_id, comparison_id in _rows(
                cursor,
                f"SELECT client_id, comparison_id FROM annotate_judgment "  # noqa: S608
                f"WHERE client_id IN ({marks})",
                [_uuid_param(cursor, c) for c in chunk],
            ):
                stored.setdefault(str(client_id).replace("-", ""), []).append(comparison_id)
        for client_id, comparison_id in acknowledged.items():
            got = stored.get(client_id.replace("-", ""), [])
            if got != [comparison_id]:
                found.append(f"acknowledged {client_id} on pair {comparison_id}: stored {got}")
    dangling = _rows(
        cursor,
        """
        SELECT a.comparison_id, a.annotator_id, a.status FROM annotate_assignment a
        LEFT JOIN annotate_judgment j
          ON j.comparison_id = a.comparison_id AND j.annotator_id = a.annotator_id
        WHERE a.project_id = %s
          AND ((a.status = 'active' AND j.id IS NOT NULL) OR (a.status = 'done' AND j.id IS NULL))
        """,
        [project_id],
    )
    found += [f"assignment of pair {c} to {a} is {s}" for c, a, s in dangling]
    return found


def _uuid_param(cursor: Any, client_id: str) -> str | uuid.UUID:
    # Django stores UUIDs on SQLite as 32 hex digits; PostgreSQL has a uuid type
    vendor = getattr(getattr(cursor, "db", None), "vendor", "postgresql")
    return client_id.replace("-", "") if vendor == "sqlite" else uuid.UUID(client_id)


def version_violations(
    cursor: Any, project_id: int, models_dir: Path, *, settled: bool = True
) -> list[str]:
    found: list[str] = []
    rows = _rows(
        cursor,
        "SELECT number, state, parent_id, trained_in_id FROM training_modelversion "
        "WHERE project_id = %s ORDER BY number",
        [project_id],
    )
    serving = [n for n, state, _, _ in rows if state == "serving"]
    if len(serving) > 1:
        found.append(f"versions {serving} all serving")
    rounds = [r for _, _, _, r in rows if r is not None]
    if len(rounds) != len(set(rounds)):
        found.append(f"a round trained more than one version: {rounds}")
    trained = {f"v{n}" for n, _, parent, _ in rows if parent is not None}
    for name in sorted(trained):
        problem = _incomplete(models_dir / name)
        if problem:
            found.append(f"{name}: {problem}")
    if models_dir.is_dir():
        for entry in sorted(models_dir.iterdir()):
            if entry.name.startswith("."):
                if settled:
                    found.append(f"left behind: {entry.name}")
            elif entry.name not in trained:
                found.append(f"directory {entry.name} has no version row")
    return found


def _incomplete(directory: Path) -> str | None:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return f"no readable manifest ({exc})"
    for name, meta in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            return f"{name} missing or cut short"
    return None


def assert_integrity(
    cursor: Any,
    project_id: int,
    *,
    acknowledged: Mapping[str, int] | None = None,
    models_dir: Path | None = None,
    settled: bool = True,
) -> None:
    """Fail with every violation found in the project's rows (and version directories)."""
    found = judgment_violations(cursor, project_id, acknowledged)
    if models_dir is not None:
        found += version_violations(cursor, project_id, models_dir, settled=settled)
    assert not found, "integrity violations:\n" + "\n".join(found)
