"""Bad files are rejected whole, with a message naming the line and the field."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from annotate.datasets.errors import TooLarge
from annotate.errors import InvalidInput
from annotate.models import Comparison, Completion, Judgment, Prompt

from .conftest import import_path, write_jsonl, write_parquet

GOOD = {"prompt": "Hi", "chosen": "a", "rejected": "b"}


def assert_nothing_written() -> None:
    assert Prompt.objects.count() == 0
    assert Completion.objects.count() == 0
    assert Comparison.objects.count() == 0
    assert Judgment.objects.count() == 0


def rejects(project, fmt, path, message, **options):
    with pytest.raises(InvalidInput) as info:
        import_path(project, fmt, path, **options)
    assert info.value.message == message
    assert_nothing_written()


def test_it_names_the_line_of_a_missing_field(team, tmp):
    rows = [GOOD] * 811 + [{"prompt": "Hi", "rejected": "b"}]
    rejects(
        team.project, "trl", write_jsonl(tmp / "x.jsonl", rows), 'line 812: "chosen" is missing'
    )


def test_it_names_a_field_of_the_wrong_type(team, tmp):
    rows = [GOOD, {"prompt": "Hi", "chosen": 3, "rejected": "b"}]
    rejects(
        team.project,
        "trl",
        write_jsonl(tmp / "x.jsonl", rows),
        'line 2: "chosen" must be a string or a list of messages',
    )
    rows = [{"messages": [{"role": "robot", "content": "x"}]}]
    rejects(
        team.project,
        "prompts",
        write_jsonl(tmp / "p.jsonl", rows),
        'line 1: "messages"[0]."role" must be one of system, user, assistant',
    )


def test_it_names_the_line_of_broken_json(team, tmp):
    path = tmp / "x.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + '\n{"prompt": "Hi",\n')
    rejects(
        team.project,
        "trl",
        path,
        "line 3: not valid JSON (Expecting property name enclosed in double quotes at column 17)",
    )


def test_it_names_a_missing_csv_column(team, tmp):
    path = tmp / "p.csv"
    path.write_text("id,question\n1,What?\n", encoding="utf-8")
    rejects(
        team.project,
        "prompts",
        path,
        'line 1: there is no "text" column (the header has "id", "question")',
        column="text",
    )
    path = tmp / "pairs.csv"
    path.write_text("prompt,completion_a\nHi,a\n", encoding="utf-8")
    rejects(team.project, "pairs", path, 'line 2: "completion_b" is missing')


def test_it_names_the_line_of_a_csv_row_with_too_many_fields(team, tmp):
    path = tmp / "p.csv"
    path.write_text('prompt\n"multi\nline"\nok\na,b\n', encoding="utf-8")
    rejects(team.project, "prompts", path, "line 5: expected 1 fields, found 2")


def test_it_names_the_row_of_a_bad_parquet_row(team, tmp):
    rows = [GOOD, {"prompt": "Hi", "chosen": None, "rejected": "b"}]
    rejects(
        team.project, "trl", write_parquet(tmp / "x.parquet", rows), 'row 2: "chosen" is missing'
    )


def test_it_refuses_a_file_over_the_limit(team, tmp):
    path = write_jsonl(tmp / "x.jsonl", [GOOD] * 10)
    with override_settings(PREFLOOP_MAX_UPLOAD_BYTES=100), pytest.raises(TooLarge) as info:
        import_path(team.project, "trl", path)
    assert info.value.status_code == 413
    assert "over the upload limit of 100 bytes" in info.value.message
    assert_nothing_written()


def test_it_refuses_a_file_that_is_not_utf8(team, tmp):
    path = tmp / "x.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode() + b"\n" + '{"prompt": "caf\u00e9"}'.encode("latin-1") + b"\n"
    )
    rejects(team.project, "prompts", path, "line 2: the file is not UTF-8 text")
    path = tmp / "x.csv"
    path.write_bytes(b"prompt\nok\n" + "caf\u00e9".encode("latin-1") + b"\n")
    rejects(team.project, "prompts", path, "line 3: the file is not UTF-8 text")


def test_it_rejects_hh_rows_whose_prompts_differ(team, tmp):
    rows = [{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}]
    rejects(
        team.project,
        "hh",
        write_jsonl(tmp / "hh.jsonl", rows),
        'line 1: "chosen" and "rejected" must share every turn but the last',
    )
    rows = [{"chosen": "Human: A Assistant: x", "rejected": "\n\nHuman: A\n\nAssistant: y"}]
    rejects(
        team.project,
        "hh",
        write_jsonl(tmp / "hh2.jsonl", rows),
        'line 1: "chosen" must be a transcript starting with "\\n\\nHuman:"',
    )


def test_it_names_the_item_of_a_bad_label_studio_task(team, tmp):
    tasks = [
        {"data": {"prompt": "p", "answer1": "a", "answer2": "b"}, "annotations": []},
        {
            "data": {"prompt": "p", "answer1": "a", "answer2": "b"},
            "annotations": [{"result": [{"type": "pairwise", "value": {"selected": "up"}}]}],
        },
    ]
    path = tmp / "ls.json"
    path.write_text(json.dumps(tasks))
    rejects(
        team.project,
        "label-studio",
        path,
        'item 2: "annotations"[0]: "selected" must be "left" or "right"',
    )
    path.write_text(json.dumps(tasks)[:-40])
    rejects(
        team.project,
        "label-studio",
        path,
        "item 2: not valid JSON (Unterminated string starting at)",
    )


def test_it_refuses_an_unknown_extension_or_format(team, tmp):
    path = tmp / "x.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(InvalidInput, match="Cannot tell the file type"):
        import_path(team.project, "prompts", path)
    with pytest.raises(InvalidInput, match='"format" must be one of'):
        import_path(team.project, "sharegpt", write_jsonl(tmp / "a.jsonl", [GOOD]))
    assert_nothing_written()


def test_it_refuses_an_empty_file(team, tmp):
    path = tmp / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(InvalidInput, match="The file holds no rows."):
        import_path(team.project, "prompts", path)
