"""Selection, aggregation, pseudonyms, bundles and the dataset card."""

from __future__ import annotations

import zipfile

import datasets
import pyarrow.parquet as pq
import pytest

from annotate.datasets.exporters import (
    estimated_total,
    export_rows,
    pseudonym,
    stream_export,
    write_export,
)
from annotate.datasets.labels import PairOptions, preference_pairs
from annotate.errors import InvalidInput
from annotate.models import Comparison

from ..factories import ComparisonFactory, CompletionFactory
from .conftest import jsonl_rows, vote


@pytest.fixture
def voted(team):
    """Four pairs: a unanimous A, a 2-1 B, a tie, a both-bad."""
    project = team.project
    unanimous, split, tied, bad = (ComparisonFactory(project=project) for _ in range(4))
    for user in (team.alice, team.bob, team.lead):
        vote(unanimous, "a", user)
    vote(split, "b", team.alice)
    vote(split, "b", team.bob)
    vote(split, "a", team.lead)
    vote(tied, "a", team.alice)
    vote(tied, "b", team.bob)
    vote(bad, "both_bad", team.alice)
    vote(bad, "both_bad", team.bob, source="simulated")
    return unanimous, split, tied, bad


def ids(project, **options):
    return [p["comparison_id"] for p in preference_pairs(project, PairOptions.from_dict(options))]


def test_it_takes_the_majority_and_drops_ties_and_both_bad_by_default(team, voted):
    unanimous, split, tied, bad = voted
    pairs = list(preference_pairs(team.project))
    assert [p["comparison_id"] for p in pairs] == [unanimous.pk, split.pk]
    second = pairs[1]
    assert second["chosen"] == split.completion_b.text
    assert second["rejected"] == split.completion_a.text
    assert (second["votes_chosen"], second["votes_rejected"], second["votes_total"]) == (2, 1, 3)
    assert second["agreement"] == pytest.approx(2 / 3) and second["weight"] == 1.0


def test_it_keeps_ties_and_both_bad_when_asked(team, voted):
    unanimous, split, tied, bad = voted
    assert ids(team.project, include_ties=True) == [unanimous.pk, split.pk, tied.pk]
    kept = ids(team.project, include_ties=True, include_both_bad=True)
    assert kept == [unanimous.pk, split.pk, tied.pk, bad.pk]
    labels = [
        p["label"]
        for p in preference_pairs(
            team.project, PairOptions(include_ties=True, include_both_bad=True)
        )
    ]
    assert labels == ["a", "b", "tie", "both_bad"]


def test_it_filters_by_agreement_votes_and_weights_by_agreement(team, voted):
    unanimous, split, *_ = voted
    assert ids(team.project, aggregation="unanimous") == [unanimous.pk]
    assert ids(team.project, aggregation="min-agreement", min_agreement=0.6) == [
        unanimous.pk,
        split.pk,
    ]
    assert ids(team.project, aggregation="min-agreement", min_agreement=0.7) == [unanimous.pk]
    assert ids(team.project, min_votes=4) == []
    weights = [p["weight"] for p in preference_pairs(team.project, PairOptions(weight="agreement"))]
    assert weights == [1.0, pytest.approx(2 / 3)]


def test_it_filters_by_round_split_and_kind(team):
    first = ComparisonFactory(project=team.project, round=1)
    second = ComparisonFactory(project=team.project, round=2, kind=Comparison.Kind.GOLD)
    second.prompt.split = "eval"
    second.prompt.save()
    for c in (first, second):
        vote(c, "a", team.alice)
    # pairs on held-out (eval, dev) prompts leave only when their split is named
    assert ids(team.project, rounds="2") == []
    assert ids(team.project, rounds="2", splits="eval") == [second.pk]
    assert ids(team.project, rounds=[1, 2]) == [first.pk]
    assert ids(team.project, rounds=[1, 2], splits="train,eval") == [first.pk, second.pk]
    assert ids(team.project, kinds="gold") == []
    assert ids(team.project, kinds="gold", splits="eval,dev") == [second.pk]
    assert ids(team.project, splits="train") == [first.pk]
    with pytest.raises(InvalidInput, match='"kinds" must be among'):
        PairOptions.from_dict({"kinds": "golden"})
    with pytest.raises(InvalidInput, match='"rounds" must be whole numbers'):
        PairOptions.from_dict({"rounds": "one"})


def test_it_carries_model_versions_and_sampling_parameters(team):
    comparison = ComparisonFactory(project=team.project)
    a = CompletionFactory(
        prompt=comparison.prompt,
        model_version_id=7,
        generation_params={"temperature": 0.7, "top_p": 0.9},
    )
    comparison.completion_a = a
    comparison.save()
    vote(comparison, "a", team.alice)
    row = jsonl_rows(b"".join(stream_export(team.project, "trl", PairOptions())))[0]
    # an id the project has no version for: kept as the id, with no name
    assert row["chosen_model_version_id"] == 7 and row["chosen_model_version"] is None
    assert row["chosen_generation_params"] == {"temperature": 0.7, "top_p": 0.9}
    assert row["rejected_model_version"] is None and row["rejected_model_version_id"] is None


def test_it_writes_pseudonymous_judgments_only(team, voted):
    unanimous, *_ = voted
    vote(unanimous, "b", None, source="imported", external="someone@example.com")
    data = b"".join(stream_export(team.project, "judgments", PairOptions()))
    text = data.decode()
    for secret in ("alice", "bob", "lead", "someone@example.com", team.project.export_salt):
        assert secret not in text
    rows = jsonl_rows(data)
    assert len(rows) == 11
    first = rows[0]
    assert first["annotator"] == pseudonym(team.project, f"user:{team.alice.pk}")
    assert first["annotator"].startswith("ann-") and len(first["annotator"]) == 20
    assert set(first) >= {
        "comparison_id",
        "choice",
        "strength",
        "rationale",
        "left_is_a",
        "shown_choice",
        "duration_ms",
        "created_at",
        "shown_at",
    }
    assert rows[-1]["annotator"] == pseudonym(team.project, "external:someone@example.com")


def test_it_gives_other_projects_other_pseudonyms(team):
    other = type(team.project).objects.exclude(pk=team.project.pk).first()
    assert pseudonym(team.project, "user:1") != pseudonym(other, "user:1")


def test_it_writes_a_zip_of_parquet_and_a_dataset_card(team, voted, tmp):
    team.project.license = "CC-BY-4.0"
    team.project.save()
    target = tmp / "out.zip"
    stats = write_export(team.project, "parquet", PairOptions(), target, bundle="zip")
    assert stats.rows == 2
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        card = archive.read("README.md").decode()
        with archive.open(names[0]) as fh:
            table = pq.read_table(fh)
    assert names[0].endswith(".parquet") and table.num_rows == 2
    assert 'license: "CC-BY-4.0"' in card
    assert team.project.instructions in card
    assert "Rows in this export:** 2" in card
    assert "Mean agreement" in card and "0.833" in card


def test_it_writes_a_directory_that_datasets_loads(team, voted, tmp):
    target = tmp / "hf"
    write_export(team.project, "trl", PairOptions(weight="agreement"), target, bundle="hf")
    loaded = datasets.load_from_disk(str(target))
    assert loaded.num_rows == 2
    assert loaded[0]["chosen"] == [{"role": "assistant", "content": voted[0].completion_a.text}]
    assert loaded[1]["weight"] == pytest.approx(2 / 3)
    assert (target / "README.md").read_text().startswith("---")


def test_it_writes_empty_exports_with_their_columns(team, tmp):
    target = tmp / "empty.parquet"
    write_export(team.project, "parquet", PairOptions(), target)
    assert pq.read_table(target).num_rows == 0
    assert b"".join(stream_export(team.project, "csv", PairOptions())).startswith(
        b"prompt,messages"
    )


def test_it_counts_tie_and_both_bad_votes_by_the_tie_votes_policy(team, voted):
    unanimous, split, tied, bad = voted
    diluted = ComparisonFactory(project=team.project)
    vote(diluted, "a", team.alice)
    vote(diluted, "tie", team.bob)
    vote(diluted, "both_bad", team.lead)

    def pairs(tie_votes, **options):
        rows = preference_pairs(team.project, PairOptions(**options), tie_votes=tie_votes)
        return {p["comparison_id"]: (p["label"], p["agreement"]) for p in rows}

    # "outcome", the default, is what the exports do: a 1-1-1 split is a tie
    assert pairs("outcome") == {unanimous.pk: ("a", 1.0), split.pk: ("b", pytest.approx(2 / 3))}
    assert list(preference_pairs(team.project, tie_votes="outcome")) == list(
        preference_pairs(team.project)
    )
    # the label is the same under every policy: one A vote does not beat a tie and a
    # both-bad vote; "drop" measures agreement on the A and B votes only
    assert pairs("drop") == {unanimous.pk: ("a", 1.0), split.pk: ("b", pytest.approx(2 / 3))}
    assert pairs("drop", include_ties=True)[diluted.pk] == ("tie", pytest.approx(1 / 3))
    assert pairs("drop", include_both_bad=True)[bad.pk] == ("both_bad", 1.0)
    # "weak" splits each tie and both-bad vote half and half, diluting the winner's share
    weak = pairs("weak", weight="agreement", include_ties=True)
    assert weak[diluted.pk] == ("tie", pytest.approx(1 / 3))
    assert weak[split.pk] == ("b", pytest.approx(2 / 3))
    assert bad.pk not in weak
    with pytest.raises(InvalidInput, match='"tie_votes" must be one of'):
        preference_pairs(team.project, tie_votes="half")


@pytest.mark.parametrize("fmt", ["judgments", "trl"])
def test_the_progress_estimate_follows_the_chosen_splits(team, fmt):
    train = ComparisonFactory(project=team.project)
    held_out = ComparisonFactory(project=team.project)
    held_out.prompt.split = "eval"
    held_out.prompt.save()
    for comparison in (train, held_out):
        vote(comparison, "a", team.alice)
        vote(comparison, "a", team.bob)
    options = PairOptions(splits=["eval"])
    rows = list(export_rows(team.project, fmt, options))
    assert len(rows) == estimated_total(team.project, fmt, options)
