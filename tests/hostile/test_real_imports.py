"""Imports of real data: skip bad rows and report them, validate without writing, and
decoded size caps in every reader."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from annotate.datasets import jobs, runner
from annotate.datasets.formats import ImportOptions
from annotate.models import Comparison, DatasetJob, Judgment, Prompt

from ..conftest import api_for


def hh(human: str, assistant: str) -> str:
    return f"\n\nHuman: {human}\n\nAssistant: {assistant}"


def hh_rows() -> list[dict[str, str]]:
    """Rows in the shape of Anthropic hh-rlhf; line 3's chosen transcript has a human turn
    inline in its assistant turn, so its transcripts no longer share their earlier turns."""
    rows = [
        {
            "chosen": hh(f"Question {i}?", f"Kind answer {i}."),
            "rejected": hh(f"Question {i}?", "No."),
        }
        for i in range(5)
    ]
    rows[2]["chosen"] = (
        "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour and water.  Human: And then?"
        "\n\nAssistant: Bake it."
    )
    rows[2]["rejected"] = hh("How do I bake bread?", "I would rather not say.")
    return rows


def hh_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "harmless-base-test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in hh_rows()) + extra)
    return path


def upload(team, path: Path, **fields):
    return api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": path.open("rb"), "format": "hh", **fields},
        format="multipart",
    )


SHARED = '"chosen" and "rejected" must share every turn but the last'


def test_by_default_one_bad_row_rejects_the_file(team, tmp_path):
    r = upload(team, hh_file(tmp_path))
    assert r.status_code == 400
    assert r.json()["detail"] == f"line 3: {SHARED}"
    assert not Comparison.objects.exists() and not Prompt.objects.exists()


def test_on_error_skip_imports_the_good_rows_and_lists_the_bad(team, tmp_path):
    r = upload(team, hh_file(tmp_path, extra="{not json\n"), on_error="skip")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["imported"] == 4
    assert body["skipped"] == [
        {"line": 3, "error": SHARED},
        {
            "line": 6,
            "error": "not valid JSON (Expecting property name enclosed in double "
            "quotes at column 2)",
        },
    ]
    assert Comparison.objects.filter(project=team.project).count() == 4
    assert Judgment.objects.filter(project=team.project).count() == 4
    texts = sorted(c.completion_a.text for c in Comparison.objects.all())
    assert texts == [f"Kind answer {i}." for i in (0, 1, 3, 4)]


def test_validate_lists_every_problem_and_writes_nothing(team, tmp_path):
    r = upload(team, hh_file(tmp_path, extra='{"chosen": "x"}\n'), validate="true")
    assert r.status_code == 200, r.content
    assert r.json() == {
        "valid": False,
        "rows": 6,
        "problems": [
            {"line": 3, "error": SHARED},
            {"line": 6, "error": '"rejected" is missing'},
        ],
    }
    assert not Prompt.objects.exists()


def test_validate_says_a_good_file_is_valid(team, tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(hh_rows()) if i != 2))
    r = upload(team, path, validate="true")
    assert r.json() == {"valid": True, "rows": 4, "problems": []}
    assert not Prompt.objects.exists()


def test_on_error_must_be_known(team, tmp_path):
    r = upload(team, hh_file(tmp_path), on_error="ignore")
    assert r.status_code == 400 and "on_error" in r.json()["detail"]


def test_the_cli_skips_and_validates(team, tmp_path, capsys):
    path = hh_file(tmp_path)
    with pytest.raises(CommandError, match="1 problems found"):
        call_command("import_data", team.project.slug, str(path), "--format", "hh", "--validate")
    assert f"line 3: {SHARED}" in capsys.readouterr().out
    assert not Prompt.objects.exists()
    call_command(
        "import_data", team.project.slug, str(path), "--format", "hh", "--on-error", "skip"
    )
    captured = capsys.readouterr()
    assert f"skipped line 3: {SHARED}" in captured.err
    assert "1 bad rows skipped" in captured.out
    assert Comparison.objects.count() == 4


def test_the_datasets_page_has_a_skip_checkbox(team, client, tmp_path):
    client.force_login(team.lead)
    page = client.get(f"/projects/{team.project.pk}/datasets/")
    assert 'name="skip_bad_rows"' in page.content.decode()
    r = client.post(
        f"/projects/{team.project.pk}/datasets/import/",
        {"format": "hh", "file": hh_file(tmp_path).open("rb"), "skip_bad_rows": "on"},
        follow=True,
    )
    assert "1 bad rows skipped (line 3:" in r.content.decode()
    assert Comparison.objects.count() == 4


def test_a_background_import_reports_skipped_lines(team, tmp_path):
    path = hh_file(tmp_path)
    job = jobs.start_import_job(
        team.project,
        team.lead,
        "hh",
        path.open("rb"),
        path.name,
        ImportOptions(on_error="skip"),
    )
    job = runner.run_job(job.pk)
    assert job.status == DatasetJob.Status.DONE
    assert job.report["imported"] == 4
    assert job.report["skipped"] == [{"line": 3, "error": SHARED}]


# --- Decoded size caps -------------------------------------------------------------


def test_a_tiny_parquet_file_that_expands_to_millions_of_characters_is_refused(team, tmp_path):
    path = tmp_path / "bomb.parquet"
    pq.write_table(
        pa.table({"prompt": ["x" * 20_000_000]}), path, compression="zstd", compression_level=22
    )
    assert path.stat().st_size < 4096
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": path.open("rb"), "format": "prompts"},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    assert r.json()["detail"] == (
        'row 1: "prompt" holds 20,000,000 bytes, over the limit of 1,000,000 '
        "(PREFLOOP_IMPORT_MAX_CELL_CHARS)"
    )
    assert not Prompt.objects.exists()


def test_parquet_rows_over_the_row_cap_are_refused(team, tmp_path, settings):
    settings.PREFLOOP_IMPORT_MAX_ROW_CHARS = 1500
    path = tmp_path / "wide.parquet"
    rows = [{"prompt": "p", "completion_a": "a", "completion_b": "b"}] * 3
    rows.append({"prompt": "p" * 600, "completion_a": "a" * 600, "completion_b": "b" * 600})
    pq.write_table(pa.Table.from_pylist(rows), path)
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": path.open("rb"), "format": "pairs"},
        format="multipart",
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith("row 4: the row holds 1,800 characters")


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("p.jsonl", '{"prompt": "ok"}\n{"prompt": "%s"}\n' % ("y" * 2000), "line 2"),
        ("p.csv", "prompt\nok\n%s\n" % ("y" * 2000), "line 3"),
        ("p.txt", "ok\n%s\n" % ("y" * 2000), "line 2"),
        ("p.json", None, "item 2"),
    ],
)
def test_every_reader_caps_a_cell(team, tmp_path, settings, name, content, where):
    settings.PREFLOOP_IMPORT_MAX_CELL_CHARS = 1000
    fmt = "prompts"
    if content is None:
        fmt = "label-studio"
        content = json.dumps(
            [
                {"data": {"prompt": "p", "answer1": "a", "answer2": "b"}},
                {"data": {"prompt": "y" * 2000, "answer1": "a", "answer2": "b"}},
            ]
        )
    path = tmp_path / name
    path.write_text(content)
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": path.open("rb"), "format": fmt},
        format="multipart",
    )
    assert r.status_code == 400, r.content
    detail = r.json()["detail"]
    assert detail.startswith(where) and "over the limit of 1,000" in detail
    assert "PREFLOOP_IMPORT_MAX_CELL_CHARS" in detail or "PREFLOOP_IMPORT_MAX_ROW_CHARS" in detail
    assert not Prompt.objects.exists()


def test_the_api_json_lists_are_capped_too(team, settings):
    settings.PREFLOOP_IMPORT_MAX_CELL_CHARS = 1000
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/prompts/",
        [{"prompt": "ok"}, {"prompt": "z" * 1001}],
        format="json",
    )
    assert r.status_code == 400
    assert r.json()["detail"].startswith('item 2: "prompt" holds 1,001 characters')


def test_skip_mode_skips_oversized_rows(team, tmp_path, settings):
    settings.PREFLOOP_IMPORT_MAX_CELL_CHARS = 1000
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "%s"}\n{"prompt": "fine"}\n' % ("y" * 2000))
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"file": path.open("rb"), "format": "prompts", "on_error": "skip"},
        format="multipart",
    )
    assert r.status_code == 201
    assert r.json()["imported"] == 2
    assert [s["line"] for s in r.json()["skipped"]] == [2]
