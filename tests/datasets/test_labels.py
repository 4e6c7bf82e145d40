"""The one rule from votes to labels: fixed vote tables worked out by hand, and where it runs."""

from __future__ import annotations

import csv
import io

import pyarrow.parquet as pq
import pytest

from annotate.datasets.exporters import (
    estimated_total,
    export_card,
    stream_export,
    write_export,
)
from annotate.datasets.labels import PairOptions, Tally, preference_pairs
from annotate.errors import InvalidInput
from annotate.models import Comparison

from ..factories import ComparisonFactory
from .conftest import jsonl_rows, vote

# (a, b, tie, both_bad) -> label
LABELS = [
    ((3, 0, 0, 0), "a"),
    ((0, 2, 0, 0), "b"),
    ((2, 1, 0, 0), "a"),
    ((1, 0, 2, 0), "tie"),  # one A against two ties: A does not win
    ((1, 0, 0, 2), "both_bad"),
    ((1, 0, 1, 0), "tie"),
    ((2, 0, 1, 0), "a"),
    ((2, 0, 1, 1), "tie"),  # two for A, two for neither side
    ((3, 0, 1, 1), "a"),
    ((1, 1, 0, 0), "tie"),
    ((1, 1, 0, 1), "tie"),
    ((0, 1, 1, 1), "tie"),
    ((1, 1, 0, 2), "both_bad"),
    ((0, 0, 0, 2), "both_bad"),
    ((0, 0, 2, 2), "tie"),
]


@pytest.mark.parametrize(("votes", "label"), LABELS)
@pytest.mark.parametrize("tie_votes", ["outcome", "drop", "weak"])
def test_the_label_is_the_same_under_every_tie_policy(votes, label, tie_votes):
    a, b, tie, both_bad = votes
    assert Tally(a, b, tie, both_bad, tie_votes=tie_votes).outcome == label


# (a, b, tie, both_bad) -> agreement under outcome, drop, weak
AGREEMENTS = [
    ((3, 0, 0, 0), (1.0, 1.0, 1.0)),
    ((2, 1, 0, 0), (2 / 3, 2 / 3, 2 / 3)),
    ((2, 0, 1, 0), (2 / 3, 1.0, 2.5 / 3)),
    ((3, 1, 0, 1), (3 / 5, 3 / 4, 3.5 / 5)),
    ((3, 0, 1, 1), (3 / 5, 1.0, 4 / 5)),
    ((0, 0, 0, 2), (1.0, 1.0, 1.0)),  # not a side: the top choice's share
    ((1, 0, 2, 0), (2 / 3, 2 / 3, 2 / 3)),
]


@pytest.mark.parametrize(("votes", "expected"), AGREEMENTS)
def test_agreement_counts_tie_votes_by_the_policy(votes, expected):
    got = tuple(Tally(*votes, tie_votes=policy).agreement for policy in ("outcome", "drop", "weak"))
    assert got == pytest.approx(expected)


# (a, b, tie, both_bad) -> label smoothing under outcome, drop, weak
SMOOTHING = [
    ((3, 0, 0, 0), (0.0, 0.0, 0.0)),
    ((2, 1, 0, 0), (1 / 3, 1 / 3, 1 / 3)),
    ((0, 2, 1, 0), (1 / 6, 0.0, 1 / 6)),  # B wins; A has no vote, the tie counts half
    ((3, 1, 0, 1), (1.5 / 5, 1 / 4, 1.5 / 5)),
    ((1, 0, 2, 0), (0.5, 0.5, 0.5)),  # a tie: no side is preferred
    ((0, 0, 0, 2), (0.5, 0.5, 0.5)),
]


@pytest.mark.parametrize(("votes", "expected"), SMOOTHING)
def test_label_smoothing_is_the_minority_vote_share(votes, expected):
    got = tuple(
        Tally(*votes, tie_votes=policy).label_smoothing for policy in ("outcome", "drop", "weak")
    )
    assert got == pytest.approx(expected)


def test_a_side_never_gets_label_smoothing_of_one_half_or_more():
    for a in range(6):
        for b in range(6):
            for tie in range(4):
                for both_bad in range(4):
                    for policy in ("outcome", "drop", "weak"):
                        tally = Tally(a, b, tie, both_bad, tie_votes=policy)
                        if tally.outcome in ("a", "b"):
                            assert tally.label_smoothing < 0.5


def _pairs(project, tie_votes, **options):
    rows = preference_pairs(project, PairOptions(**options), tie_votes=tie_votes)
    return {p["comparison_id"]: p for p in rows}


def test_one_a_vote_and_two_ties_is_a_tie_for_exports_and_training(team):
    one_a = ComparisonFactory(project=team.project)
    vote(one_a, "a", team.alice)
    vote(one_a, "tie", team.bob)
    vote(one_a, "tie", team.lead)
    two_a = ComparisonFactory(project=team.project)
    vote(two_a, "a", team.alice)
    vote(two_a, "a", team.bob)
    vote(two_a, "tie", team.lead)

    for policy in ("outcome", "drop", "weak"):
        kept = _pairs(team.project, policy, weight="agreement")
        assert list(kept) == [two_a.pk], policy
        assert _pairs(team.project, policy, include_ties=True)[one_a.pk]["label"] == "tie"
    assert _pairs(team.project, "drop", weight="agreement")[two_a.pk]["weight"] == 1.0
    weak = _pairs(team.project, "weak", weight="agreement")[two_a.pk]
    assert weak["weight"] == pytest.approx(2.5 / 3)
    assert weak["label_smoothing"] == pytest.approx(1 / 6)


@pytest.fixture
def kinds(team):
    """One judged pair of each kind: train, eval, gold."""
    made = {}
    for kind in Comparison.Kind.values:
        comparison = ComparisonFactory(project=team.project, kind=kind)
        vote(comparison, "a", team.alice)
        made[kind] = comparison
    return made


@pytest.mark.parametrize("fmt", ["trl", "judgments"])
def test_a_default_export_leaves_eval_comparisons_out(team, kinds, fmt):
    rows = jsonl_rows(b"".join(stream_export(team.project, fmt, PairOptions())))
    assert sorted(r["comparison_id"] for r in rows) == [kinds["train"].pk, kinds["gold"].pk]
    assert estimated_total(team.project, fmt, PairOptions()) == 2
    asked = PairOptions.from_dict({"kinds": "eval"})
    rows = jsonl_rows(b"".join(stream_export(team.project, fmt, asked)))
    assert [(r["comparison_id"], r["kind"]) for r in rows] == [(kinds["eval"].pk, "eval")]
    every = PairOptions.from_dict({"kinds": "train,eval,gold"})
    assert len(jsonl_rows(b"".join(stream_export(team.project, fmt, every)))) == 3


def test_the_card_says_that_eval_comparisons_are_left_out(team, kinds):
    card = export_card(team.project, "trl", PairOptions())
    assert "eval comparisons are left out" in card
    assert "- `kinds`: eval" in export_card(team.project, "trl", PairOptions(kinds=["eval"]))


def test_label_smoothing_is_a_column_only_when_asked(team, tmp):
    comparison = ComparisonFactory(project=team.project)
    for choice in ("b", "b", "a", "tie"):
        vote(comparison, choice)
    plain = jsonl_rows(b"".join(stream_export(team.project, "trl", PairOptions())))[0]
    assert "label_smoothing" not in plain
    soft = PairOptions.from_dict({"label_smoothing": "true"})
    row = jsonl_rows(b"".join(stream_export(team.project, "trl-plain", soft)))[0]
    assert row["label"] == "b" and row["label_smoothing"] == pytest.approx(1.5 / 4)
    text = b"".join(stream_export(team.project, "csv", soft)).decode()
    (csv_row,) = csv.DictReader(io.StringIO(text))
    assert float(csv_row["label_smoothing"]) == pytest.approx(1.5 / 4)
    write_export(team.project, "parquet", soft, tmp / "soft.parquet")
    table = pq.read_table(tmp / "soft.parquet")
    assert table.column("label_smoothing").to_pylist() == [pytest.approx(1.5 / 4)]
    write_export(team.project, "parquet", PairOptions(), tmp / "hard.parquet")
    assert "label_smoothing" not in pq.read_table(tmp / "hard.parquet").column_names


@pytest.mark.parametrize("name", ["include_ties", "include_both_bad", "label_smoothing"])
def test_an_export_flag_is_true_or_false_and_nothing_else(name):
    assert PairOptions.from_dict({name: "on"}).as_dict()[name] is True
    assert PairOptions.from_dict({name: "0"}).as_dict()[name] is False
    assert PairOptions.from_dict({name: ""}).as_dict()[name] is False
    with pytest.raises(InvalidInput, match=name):
        PairOptions.from_dict({name: "-1"})
