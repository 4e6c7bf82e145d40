from __future__ import annotations

import json

import datasets
import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from annotate.models import Comparison

from .conftest import jsonl_rows, write_jsonl

ROWS = [{"prompt": "Hi", "chosen": "yes", "rejected": "no"}]


def test_it_imports_and_exports_from_the_command_line(team, tmp, capsys):
    path = write_jsonl(tmp / "in.jsonl", ROWS)
    call_command("import_data", team.project.slug, str(path), "--format", "trl", "--kind", "gold")
    assert "1 pairs added" in capsys.readouterr().out
    assert Comparison.objects.get().kind == "gold"
    out = tmp / "out.jsonl"
    call_command("export_data", str(team.project.pk), "--format", "trl-plain", "-o", str(out))
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in jsonl_rows(out.read_bytes())] == [
        ("Hi", "yes", "no")
    ]
    call_command(
        "export_data", team.project.slug, "--format", "trl", "--bundle", "hf", "-o", str(tmp / "hf")
    )
    assert datasets.load_from_disk(str(tmp / "hf")).num_rows == 1
    call_command("export_data", team.project.slug, "--format", "card", "-o", str(tmp / "README.md"))
    assert "# Team project" in (tmp / "README.md").read_text()


def test_it_fails_with_one_line_naming_the_problem(team, tmp):
    path = write_jsonl(tmp / "in.jsonl", ROWS + [{"prompt": "x", "chosen": "y"}])
    with pytest.raises(CommandError, match='^Nothing was imported: line 2: "rejected" is missing$'):
        call_command("import_data", team.project.slug, str(path), "--format", "trl")
    with (
        override_settings(PREFLOOP_MAX_UPLOAD_BYTES=10),
        pytest.raises(CommandError, match="upload limit"),
    ):
        call_command("import_data", team.project.slug, str(path), "--format", "trl")
    with pytest.raises(CommandError, match="No project"):
        call_command("export_data", "nope", "--format", "trl", "-o", str(tmp / "x"))
    assert Comparison.objects.count() == 0


def test_it_exits_with_status_1_and_a_one_line_error(team, tmp, capsys):
    from django.core.management import execute_from_command_line

    path = tmp / "bad.jsonl"
    path.write_text(json.dumps({"prompt": ""}) + "\n")
    argv = ["manage.py", "import_data", team.project.slug, str(path), "--format", "prompts"]
    with pytest.raises(SystemExit) as info:
        execute_from_command_line(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == 'CommandError: Nothing was imported: line 1: "prompt" must not be empty'
