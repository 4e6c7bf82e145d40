"""Each import format, imported and exported again, gives back exactly what went in."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow.parquet as pq

from annotate.datasets.exporters import stream_export, write_export
from annotate.datasets.formats import hh_transcript
from annotate.datasets.labels import PairOptions
from annotate.models import Comparison, Judgment, Project, Prompt

from ..factories import ProjectFactory
from .conftest import import_path, jsonl_rows, vote, write_jsonl, write_parquet

MULTI_TURN = [
    {"role": "system", "content": "Réponds brièvement. 🙂"},
    {"role": "user", "content": 'Line one\nline two\r\n\ttabbed, "quoted"'},
    {"role": "assistant", "content": "前回の答え — ok"},
    {"role": "user", "content": "And now?\n\n"},
]
LONG = "Ünïcödé 長い text\n" * 12_000  # about 200 KB
CASES = [
    (MULTI_TURN, "Chosen:\n```py\nprint('hi')\n```", ""),
    ([{"role": "user", "content": "Short 🙂"}], LONG, "rejected, with a comma"),
    ([{"role": "user", "content": "x"}], "", "  leading and trailing spaces  "),
]


def exported(project: Project, fmt: str, **options: Any) -> list[dict[str, Any]]:
    data = b"".join(stream_export(project, fmt, PairOptions.from_dict(options)))
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    return jsonl_rows(data)


def trl_rows() -> list[dict[str, Any]]:
    return [
        {
            "prompt": messages,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        for messages, chosen, rejected in CASES
    ]


def content(rows: list[dict[str, Any]]) -> list[tuple[Any, Any, Any]]:
    return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


def test_it_round_trips_trl_conversational_jsonl(team, tmp):
    path = write_jsonl(tmp / "prefs.jsonl", trl_rows())
    report = import_path(team.project, "trl", path)
    assert (report.rows, report.comparisons_added, report.judgments_added) == (3, 3, 3)
    assert content(exported(team.project, "trl")) == content(trl_rows())
    judgment = Judgment.objects.first()
    assert judgment.source == Judgment.Source.IMPORTED and judgment.annotator is None


def test_it_round_trips_trl_plain_strings(team, tmp):
    rows = [
        {"prompt": "Plain prompt\nwith lines 🙂", "chosen": "yes", "rejected": ""},
        {"prompt": "Long one", "chosen": LONG, "rejected": "no"},
    ]
    import_path(team.project, "trl", write_jsonl(tmp / "plain.jsonl", rows))
    assert content(exported(team.project, "trl-plain")) == content(rows)


def test_it_round_trips_trl_parquet(team, tmp):
    path = write_parquet(tmp / "prefs.parquet", trl_rows())
    import_path(team.project, "trl", path)
    out = tmp / "out.parquet"
    write_export(team.project, "parquet", PairOptions(), out)
    table = pq.read_table(out).to_pylist()
    assert content(table) == content(trl_rows())
    assert table[0]["votes_chosen"] == 1 and table[0]["weight"] == 1.0


def test_it_round_trips_its_own_csv_export_through_trl_import(team, tmp):
    import_path(team.project, "trl", write_jsonl(tmp / "prefs.jsonl", trl_rows()))
    out = tmp / "pairs.csv"
    write_export(team.project, "csv", PairOptions(), out)
    other = ProjectFactory()
    report = import_path(other, "trl", out)
    assert report.comparisons_added == 3
    assert content(exported(other, "trl")) == content(trl_rows())
    assert exported(other, "csv")[0]["messages"] == json.dumps(MULTI_TURN, ensure_ascii=False)


def test_it_round_trips_anthropic_hh_transcripts(team, tmp):
    rows = [
        {
            "chosen": hh_transcript(MULTI_TURN[1:] + [{"role": "assistant", "content": c}]),
            "rejected": hh_transcript(MULTI_TURN[1:] + [{"role": "assistant", "content": r}]),
        }
        for _, c, r in CASES[:2]
    ]
    path = write_jsonl(tmp / "hh.jsonl", rows)
    report = import_path(team.project, "hh", path)
    assert report.comparisons_added == 2 and report.prompts_skipped == 1
    prompt = Prompt.objects.get(project=team.project)
    assert prompt.messages == MULTI_TURN[1:]
    out = exported(team.project, "trl")
    rebuilt = [
        {
            "chosen": hh_transcript(r["prompt"] + r["chosen"]),
            "rejected": hh_transcript(r["prompt"] + r["rejected"]),
        }
        for r in out
    ]
    assert rebuilt == rows


def test_it_round_trips_ultrafeedback_binarized_rows(team, tmp):
    rows = [
        {
            "prompt": messages[-1]["content"],
            "prompt_id": f"id-{i}",
            "chosen": messages + [{"role": "assistant", "content": c}],
            "rejected": messages + [{"role": "assistant", "content": r}],
            "score_chosen": 8.5,
            "score_rejected": 3.0,
        }
        for i, (messages, c, r) in enumerate(CASES)
    ]
    import_path(team.project, "ultrafeedback", write_parquet(tmp / "uf.parquet", rows))
    out = exported(team.project, "trl")
    assert [r["prompt"] + r["chosen"] for r in out] == [r["chosen"] for r in rows]
    assert [r["prompt"] + r["rejected"] for r in out] == [r["rejected"] for r in rows]
    assert Prompt.objects.filter(metadata__prompt_id="id-1").exists()


def test_it_round_trips_a_label_studio_pairwise_export(team, tmp):
    tasks = [
        {
            "id": 10 + i,
            "data": {"prompt": messages[-1]["content"], "answer1": c, "answer2": r},
            "annotations": [
                {
                    "completed_by": {"id": 1, "email": "ann@example.com"},
                    "result": [{"type": "pairwise", "value": {"selected": "left"}}],
                    "lead_time": 4.25,
                },
                {
                    "completed_by": 2,
                    "result": [{"type": "pairwise", "value": {"selected": "left"}}],
                },
                {"completed_by": 3, "was_cancelled": True, "result": []},
            ],
        }
        for i, (messages, c, r) in enumerate(CASES)
    ]
    path = tmp / "project-1-at-2024.json"
    path.write_text(json.dumps(tasks, ensure_ascii=False, indent=2), encoding="utf-8")
    report = import_path(team.project, "label-studio", path)
    assert (report.comparisons_added, report.judgments_added) == (3, 6)
    out = exported(team.project, "trl")
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in out] == [
        (c, r) for _, c, r in CASES
    ]
    assert [r["prompt"][0]["content"] for r in out] == [m[-1]["content"] for m, _, _ in CASES]
    assert out[0]["votes_chosen"] == 2 and out[0]["agreement"] == 1.0
    judgments = exported(team.project, "judgments")
    assert judgments[0]["duration_ms"] == 4250
    assert "ann@example.com" not in json.dumps(judgments)
    assert len({j["annotator"] for j in judgments}) == 2


def test_it_round_trips_pairs_to_annotate_in_every_file_type(team, tmp):
    rows = [
        {"messages": messages, "completion_a": a, "completion_b": b} for messages, a, b in CASES
    ]
    for name, writer in (("pairs.jsonl", write_jsonl), ("pairs.parquet", write_parquet)):
        project = ProjectFactory()
        import_path(project, "pairs", writer(tmp / name, rows))
        for i, comparison in enumerate(Comparison.objects.filter(project=project)):
            vote(comparison, "a" if i % 2 == 0 else "b")
        out = exported(project, "trl")
        expected = [
            (
                m,
                [{"role": "assistant", "content": a if i % 2 == 0 else b}],
                [{"role": "assistant", "content": b if i % 2 == 0 else a}],
            )
            for i, (m, a, b) in enumerate(CASES)
        ]
        assert content(out) == expected, name
    csv_path = tmp / "pairs.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, ["messages", "completion_a", "completion_b"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "messages": json.dumps(row["messages"], ensure_ascii=False)})
    project = ProjectFactory()
    import_path(project, "pairs", csv_path)
    stored = [
        (c.prompt.messages, c.completion_a.text, c.completion_b.text)
        for c in Comparison.objects.filter(project=project)
    ]
    assert stored == [(m, a, b) for m, a, b in CASES]


def test_it_imports_prompts_from_every_file_type_and_skips_duplicates(team, tmp):
    texts = ["Première question 🙂", 'Second,\n"quoted" question', "Third " + LONG[:5000]]
    csv_path = tmp / "prompts.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        for i, text in enumerate(texts + texts[:1]):
            writer.writerow([i, text])
    tsv_path = tmp / "prompts.tsv"
    with tsv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t")
        writer.writerow(["text"])
        for text in texts:
            writer.writerow([text])
    one_line = [t for t in texts if "\n" not in t]
    txt_path = tmp / "prompts.txt"
    txt_path.write_text("\n".join(one_line) + "\n\n", encoding="utf-8")
    files = [
        (
            write_jsonl(
                tmp / "p.jsonl", [{"prompt": t} for t in texts] + [{"messages": MULTI_TURN}]
            ),
            texts,
            {},
        ),
        (csv_path, texts, {"column": "text"}),
        (tsv_path, texts, {"column": "text"}),
        (txt_path, one_line, {}),
        (write_parquet(tmp / "p.parquet", [{"prompt": t} for t in texts]), texts, {}),
    ]
    for path, expected, options in files:
        project = ProjectFactory()
        report = import_path(project, "prompts", path, **options)
        stored = [p.messages for p in Prompt.objects.filter(project=project)]
        users = [[{"role": "user", "content": t}] for t in expected]
        if path.suffix == ".jsonl":
            users.append(MULTI_TURN)
        assert stored == users, path.name
        assert report.prompts_added == len(users)
    report = import_path(project, "prompts", files[0][0])
    assert (report.prompts_added, report.prompts_skipped) == (1, 3)
