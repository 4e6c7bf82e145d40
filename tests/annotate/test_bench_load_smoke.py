"""`bench/bench_load.py`: a short run on the embedded defaults is clean, and the integrity check
every run ends with finds each kind of violation planted in a project."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone

from annotate import services
from annotate.models import Assignment, Comparison, Judgment, Project
from bench import _rows, bench_load


@pytest.mark.slow
def test_it_runs_two_annotators_clean_on_the_embedded_defaults(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = ["--db", "sqlite", "--annotators", "2", "--mode", "stress,paced"]
    argv += ["--duration", "3", "--pace", "1", "--out", str(out)]

    assert bench_load.main(argv) == 0

    rows = json.loads(out.read_text())["rows"]
    assert [(r["db"], r["mode"], r["annotators"]) for r in rows] == [
        ("sqlite", "stress", 2),
        ("sqlite", "paced", 2),
    ]
    for row in rows:
        assert row["errors"] == 0 and row["violations"] == 0 and not row["ran_dry"]
        # every acknowledged judgment is in the project, and nothing else is
        assert row["judgments"] > 0 and row["checks"]["judgments"] == row["judgments"]
        assert row["next_p50_ms"] <= row["next_p95_ms"] <= row["next_p99_ms"]
        assert row["pairs_per_s"] == pytest.approx(row["judgments_per_s"] / 2)
    # one judgment a second each, give or take the last one judged after the time was up
    assert rows[1]["judgments"] <= 2 * (3 + 1)


def _judge(user_id: int, project_id: int) -> list[Any]:
    """Lease and judge the next pair through the services, as the API does; the ack triple."""
    user = _user(user_id)
    project = services.get_project(user, project_id)
    assignment = services.next_assignment(project, user)
    assert assignment is not None
    client_id = uuid.uuid4()
    services.submit_judgment(
        user, assignment.comparison_id, services.JudgmentInput(choice="left", client_id=client_id)
    )
    return [user_id, assignment.comparison_id, str(client_id)]


def _user(user_id: int) -> Any:
    return get_user_model().objects.get(pk=user_id)


def _violations(project_id: int, acknowledged: list[list[Any]]) -> dict[str, int]:
    checks = _rows.check_integrity(project_id, acknowledged)
    return {k: v for k, v in checks.items() if k not in ("judgments", "complete_pairs") and v}


@pytest.mark.django_db
def test_the_integrity_check_finds_each_planted_violation() -> None:
    (a, _), (b, _), (c, _) = _rows.create_annotators(3, prefix="check")
    project_id = _rows.create_project("check", [a, b, c], pairs=4, overlap=1)
    # no gold or hidden repeats: each plant below is the only thing out of place
    Project.objects.filter(pk=project_id).update(gold_rate=0, repeat_rate=0)
    project = Comparison.objects.filter(project_id=project_id)
    acknowledged = [_judge(a, project_id), _judge(b, project_id)]
    assert _violations(project_id, acknowledged) == {}

    # a judgment acknowledged to the client but not stored
    lost = [c, acknowledged[0][1], str(uuid.uuid4())]
    assert _violations(project_id, [*acknowledged, lost]) == {"missing": 1}

    # a second annotator on a pair of overlap 1, written as a real judgment would be
    judged = acknowledged[0][1]
    Assignment.objects.create(
        comparison_id=judged, annotator_id=c, project_id=project_id, left_is_a=True,
        status=Assignment.Status.DONE, lease_expires=timezone.now(),
    )  # fmt: skip
    Judgment.objects.create(
        comparison_id=judged, annotator_id=c, project_id=project_id, choice="a", left_is_a=True
    )
    project.filter(pk=judged).update(judgment_count=F("judgment_count") + 1)
    assert _violations(project_id, acknowledged) == {"over_overlap": 1}
    Judgment.objects.filter(comparison_id=judged, annotator_id=c).delete()
    Assignment.objects.filter(comparison_id=judged, annotator_id=c).delete()
    project.filter(pk=judged).update(judgment_count=F("judgment_count") - 1)
    assert _violations(project_id, acknowledged) == {}

    # a counter out of step with its rows
    project.filter(pk=judged).update(judgment_count=0)
    assert _violations(project_id, acknowledged) == {"count_mismatch": 1}
    project.filter(pk=judged).update(judgment_count=1)

    # a lease nobody will judge: the client stopped without judging the pair it held
    services.next_assignment(services.get_project(_user(c), project_id), _user(c))
    assert _violations(project_id, acknowledged) == {"dangling": 1}
    # and a pair marked judged without its judgment
    Assignment.objects.filter(annotator_id=c).update(status=Assignment.Status.DONE)
    assert _violations(project_id, acknowledged) == {"dangling": 1}
