"""Exports say which completions were cut off, so that offline training can honour it."""

from __future__ import annotations

import csv
import io
from typing import Any

import pyarrow.parquet as pq

from annotate.datasets.exporters import export_card, stream_export, write_export
from annotate.datasets.labels import PairOptions
from annotate.models import Comparison, Completion
from training.core.data import pair_from_row

from .conftest import jsonl_rows, vote


def _pairs(team: Any) -> tuple[Comparison, Comparison]:
    cut, unknown = team.pairs(2)
    # the first pair's A was cut off, B ended; the second's ends are not known (imported)
    Completion.objects.filter(pk=cut.completion_a_id).update(finished=False)
    Completion.objects.filter(pk=cut.completion_b_id).update(finished=True)
    vote(cut, "b", team.alice)  # B chosen: the cut-off A is rejected
    vote(unknown, "a", team.alice)
    return cut, unknown


def _export(team: Any, fmt: str) -> bytes:
    return b"".join(stream_export(team.project, fmt, PairOptions()))


def test_pair_formats_carry_chosen_and_rejected_finished(team: Any) -> None:
    _pairs(team)
    for fmt in ("trl", "trl-plain"):
        cut, unknown = jsonl_rows(_export(team, fmt))
        assert (cut["chosen_finished"], cut["rejected_finished"]) == (True, False)
        assert (unknown["chosen_finished"], unknown["rejected_finished"]) == (None, None)
    rows = list(csv.DictReader(io.StringIO(_export(team, "csv").decode("utf-8"), newline="")))
    assert (rows[0]["chosen_finished"], rows[0]["rejected_finished"]) == ("True", "False")
    assert (rows[1]["chosen_finished"], rows[1]["rejected_finished"]) == ("", "")


def test_parquet_has_boolean_finished_columns(team: Any, tmp: Any) -> None:
    _pairs(team)
    path = tmp / "pairs.parquet"
    write_export(team.project, "parquet", PairOptions(), path)
    table = pq.read_table(path)
    assert str(table.schema.field("chosen_finished").type) == "bool"
    assert table.column("rejected_finished").to_pylist() == [False, None]
    assert table.column("chosen_finished").to_pylist() == [True, None]


def test_judgments_carry_each_completions_finished(team: Any) -> None:
    _pairs(team)
    cut, unknown = jsonl_rows(_export(team, "judgments"))
    assert (cut["a_finished"], cut["b_finished"]) == (False, True)
    assert (unknown["a_finished"], unknown["b_finished"]) == (None, None)


def test_an_exported_pair_trains_its_cut_off_side_as_a_prefix(team: Any) -> None:
    _pairs(team)
    cut, unknown = jsonl_rows(_export(team, "trl"))
    pair = pair_from_row(cut)
    assert (pair.chosen_finished, pair.rejected_finished) == (True, False)
    assert pair_from_row(unknown).rejected_finished is None


def test_the_card_explains_the_finished_columns(team: Any) -> None:
    _pairs(team)
    card = export_card(team.project, "trl", PairOptions())
    assert "## Cut-off completions" in card and "`chosen_finished` and `rejected_finished`" in card
    card = export_card(team.project, "judgments", PairOptions())
    assert "`a_finished` and `b_finished`" in card
