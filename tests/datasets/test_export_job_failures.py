"""A background export that fails partway leaves no file behind: neither a partial result nor
its temporary file. The job says it failed, and why when the reason is the disk."""

from __future__ import annotations

import errno
import os
import time
import zipfile

import pytest

from annotate.datasets import exporters, jobs, runner
from annotate.datasets.labels import PairOptions
from annotate.models import DatasetJob

from .conftest import vote


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


@pytest.fixture
def judged(team):
    for comparison in team.pairs(30):
        vote(comparison, "a", team.alice)
    return team


def _break_after(monkeypatch, rows: int, error: Exception) -> None:
    """Exports fail at row ``rows`` + 1, after the earlier rows were written out in small
    chunks."""
    monkeypatch.setattr(exporters, "CHUNK_BYTES", 256)
    monkeypatch.setattr(exporters, "ARROW_BATCH", 5)
    original = exporters.export_rows

    def breaking(*args, **kwargs):
        for n, row in enumerate(original(*args, **kwargs)):
            if n == rows:
                raise error
            yield row

    monkeypatch.setattr(exporters, "export_rows", breaking)


def _files(var_dir):
    return sorted(p.name for p in (var_dir / "exports").rglob("*"))


@pytest.mark.parametrize(
    ("fmt", "bundle"), [("trl", "file"), ("csv", "file"), ("parquet", "file"), ("trl", "zip")]
)
def test_it_keeps_no_partial_file_of_a_failed_export(
    judged, var_dir, monkeypatch, caplog, fmt, bundle
):
    _break_after(monkeypatch, 20, RuntimeError("the database went away"))
    job = jobs.start_export_job(judged.project, judged.lead, fmt, PairOptions(), bundle)
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.FAILED
    assert job.error == (
        "The export failed before it was complete; no file was kept. "
        "The worker's log has the details."
    )
    assert job.result_path == ""
    assert _files(var_dir) == []
    assert "the database went away" in caplog.text


def test_it_keeps_no_partial_zip_of_a_failed_hf_bundle(judged, var_dir, monkeypatch):
    def zip_half(directory, target):
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr("half", "x" * 10_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner, "zip_directory", zip_half)
    job = jobs.start_export_job(judged.project, judged.lead, "trl", PairOptions(), "hf")
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.FAILED
    assert job.error == (
        "The export failed before it was complete (No space left on device); no file was "
        "kept. The worker's log has the details."
    )
    assert _files(var_dir) == []


def test_a_full_disk_is_named_in_the_error_without_a_path(judged, var_dir, monkeypatch):
    full = OSError(errno.ENOSPC, "No space left on device", str(var_dir / "exports"))
    _break_after(monkeypatch, 20, full)
    job = jobs.start_export_job(judged.project, judged.lead, "trl", PairOptions(), "file")
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.FAILED
    assert "(No space left on device)" in job.error and str(var_dir) not in job.error
    assert _files(var_dir) == []


def test_options_that_no_longer_hold_fail_the_job_rather_than_leave_it_running(judged, var_dir):
    # a version named when the job started may be gone when a worker picks it up
    job = jobs.start_export_job(judged.project, judged.lead, "trl", PairOptions(), "file")
    DatasetJob.objects.filter(pk=job.pk).update(options={"versions": ["v99"]})
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.FAILED and "v99" in job.error
    assert _files(var_dir) == []


@pytest.mark.parametrize(("fmt", "bundle"), [("trl", "file"), ("parquet", "zip"), ("trl", "hf")])
def test_a_whole_export_is_renamed_into_place(judged, var_dir, fmt, bundle):
    job = jobs.start_export_job(judged.project, judged.lead, fmt, PairOptions(), bundle)
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.DONE and job.progress == 30
    assert _files(var_dir) == [f"{job.pk}-{job.filename}"]
    assert jobs.result_file(job).stat().st_size > 0


def test_an_export_sweeps_the_parts_a_killed_worker_left(judged, var_dir):
    exports = runner.exports_dir()
    day_old = time.time() - 25 * 3600
    left_file = exports / ".7-dead.part"
    left_file.write_bytes(b"half an export")
    left_dir = exports / ".8-dead.part"
    (left_dir / "data").mkdir(parents=True)
    (left_dir / "data" / "data-00000-of-00001.arrow").write_bytes(b"half")
    for path in (
        left_file,
        left_dir,
        left_dir / "data",
        left_dir / "data" / "data-00000-of-00001.arrow",
    ):
        os.utime(path, (day_old, day_old))
    being_written = exports / ".9-alive.part"
    being_written.write_bytes(b"still growing")
    job = runner.run_job(
        jobs.start_export_job(judged.project, judged.lead, "trl", PairOptions(), "file").pk
    )
    assert job.status == DatasetJob.Status.DONE
    assert _files(var_dir) == [".9-alive.part", f"{job.pk}-{job.filename}"]
