from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest
from django.conf import settings

from annotate.datasets import jobs, runner
from annotate.datasets.formats import ImportOptions
from annotate.datasets.labels import PairOptions
from annotate.models import DatasetJob, Prompt

from ..factories import ProjectFactory
from .conftest import import_path, vote


def test_it_stores_a_failed_import_and_writes_nothing(team):
    body = io.BytesIO(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    job = jobs.start_import_job(team.project, team.lead, "trl", body, "x.jsonl", ImportOptions())
    source = Path(settings.VAR_DIR) / job.source_path
    assert source.is_file()
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.FAILED
    assert job.error == 'line 2: "chosen" is missing'
    assert Prompt.objects.count() == 0 and not source.exists()


def test_it_reports_progress_while_running_and_totals_when_done(team):
    for comparison in team.pairs(3):
        vote(comparison, "a", team.alice)
    job = jobs.start_export_job(team.project, team.lead, "csv", PairOptions(), "file")
    assert jobs.job_percent(job) == 0
    job = runner.run_job(job.pk)
    assert (job.status, job.progress, job.total, jobs.job_percent(job)) == ("done", 3, 3, 100)
    assert jobs.result_file(job).read_text().count("\n") == 4
    assert runner.run_job(job.pk).status == "done"


def _peak_import_memory(project, path):
    tracemalloc.start()
    try:
        report = import_path(project, "trl", path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return report, peak


@pytest.mark.slow
def test_it_imports_a_big_file_without_holding_it_in_memory(team, tmp):
    filler = "x" * 2000
    peaks = []
    for n in (1500, 6000):
        path = tmp / f"big-{n}.jsonl"
        with path.open("w") as fh:
            for i in range(n):
                row = {"prompt": f"{n} {i} {filler}", "chosen": filler, "rejected": filler}
                fh.write(json.dumps(row) + "\n")
        report, peak = _peak_import_memory(ProjectFactory(), path)
        assert report.comparisons_added == n
        peaks.append(peak)
    assert peaks[1] < path.stat().st_size / 2, (peaks, path.stat().st_size)
    # Four times the rows, about the same peak: memory follows the batch, not the file.
    assert peaks[1] < peaks[0] * 1.5, peaks
