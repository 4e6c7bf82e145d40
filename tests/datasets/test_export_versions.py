"""Exports name model versions as the rest of prefloop does ("base", "v1", ...) in every
format and in the card, filter by them, and keep sampling parameters as one JSON encoding."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from annotate.datasets.exporters import export_card, export_rows, stream_export, write_export
from annotate.datasets.labels import PairOptions
from annotate.errors import InvalidInput
from annotate.models import Comparison
from training.models import ModelVersion
from training.services import base_version

from ..conftest import api_for
from ..factories import ComparisonFactory, CompletionFactory
from .conftest import jsonl_rows, vote

PARAMS = {"version": "v1", "temperature": 0.7, "top_p": 0.9}


def _pair(project: Any, version: ModelVersion, rival: ModelVersion, **fields: Any) -> Comparison:
    comparison = ComparisonFactory(project=project, **fields)
    comparison.completion_a = CompletionFactory(
        prompt=comparison.prompt, text="A", model_version_id=version.pk, generation_params=PARAMS
    )
    comparison.completion_b = CompletionFactory(
        prompt=comparison.prompt, text="B", model_version_id=rival.pk, generation_params={}
    )
    comparison.save()
    return comparison


@pytest.fixture
def versioned(team: Any) -> dict[str, Any]:
    """Round 1 sampled by the base, round 2 by v1 (b chosen), an eval pair of v1 against base."""
    base = base_version(team.project)
    # ids that differ from the numbers, as they do once a second project has versions
    ModelVersion.objects.create(project=team.project, number=5, spec="x", parent=base)
    ModelVersion.objects.filter(project=team.project, number=5).delete()
    v1 = ModelVersion.objects.create(project=team.project, number=1, spec="v1", parent=base)
    assert v1.pk != 1
    round1 = _pair(team.project, base, base, round=1)
    round2 = _pair(team.project, v1, v1, round=2)
    evaluation = _pair(team.project, v1, base, round=2, kind=Comparison.Kind.EVAL)
    vote(round1, "a", team.alice)
    vote(round2, "b", team.alice)
    vote(evaluation, "a", team.alice)
    return {"base": base, "v1": v1, "round1": round1, "round2": round2, "eval": evaluation}


def _by_comparison(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(r["comparison_id"]): r for r in rows}


def _arrow_rows(path: Path) -> list[dict[str, Any]]:
    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


@pytest.mark.parametrize("fmt", ["trl", "trl-plain"])
def test_it_names_versions_in_jsonl(team, versioned, fmt):
    rows = jsonl_rows(b"".join(stream_export(team.project, fmt, PairOptions())))
    by_id = _by_comparison(rows)
    first, second = by_id[versioned["round1"].pk], by_id[versioned["round2"].pk]
    assert (first["chosen_model_version"], first["rejected_model_version"]) == ("base", "base")
    assert (second["chosen_model_version"], second["rejected_model_version"]) == ("v1", "v1")
    assert second["chosen_model_version_id"] == versioned["v1"].pk
    # an object, not a JSON string inside JSON
    assert first["chosen_generation_params"] == PARAMS


def test_it_names_versions_in_csv(team, versioned):
    text = b"".join(stream_export(team.project, "csv", PairOptions())).decode()
    by_id = _by_comparison(list(csv.DictReader(io.StringIO(text))))
    second = by_id[versioned["round2"].pk]
    assert second["chosen_model_version"] == "v1"
    assert second["chosen_model_version_id"] == str(versioned["v1"].pk)
    assert by_id[versioned["round1"].pk]["rejected_model_version"] == "base"
    # CSV cells are text: the parameters are encoded once, as a JSON object
    assert json.loads(by_id[versioned["round1"].pk]["chosen_generation_params"]) == PARAMS


def test_it_names_versions_in_parquet(team, versioned, tmp_path):
    target = tmp_path / "pairs.parquet"
    write_export(team.project, "parquet", PairOptions(), target)
    table = pq.read_table(target)
    assert table.schema.field("chosen_model_version").type == pa.string()
    by_id = _by_comparison(table.to_pylist())
    assert by_id[versioned["round2"].pk]["chosen_model_version"] == "v1"
    assert by_id[versioned["round1"].pk]["chosen_model_version"] == "base"
    assert json.loads(by_id[versioned["round1"].pk]["chosen_generation_params"]) == PARAMS


def test_it_names_versions_in_a_hugging_face_directory(team, versioned, tmp_path):
    directory = tmp_path / "hf"
    write_export(team.project, "trl", PairOptions(), directory, bundle="hf")
    by_id = _by_comparison(_arrow_rows(directory / "data-00000-of-00001.arrow"))
    assert by_id[versioned["round2"].pk]["rejected_model_version"] == "v1"
    assert json.loads(by_id[versioned["round1"].pk]["chosen_generation_params"]) == PARAMS
    card = (directory / "README.md").read_text()
    assert "- v1: " in card and "- base: " in card


def test_it_names_versions_in_judgments(team, versioned):
    rows = list(export_rows(team.project, "judgments", PairOptions(kinds=["train", "eval"])))
    by_id = _by_comparison(rows)
    evaluation = by_id[versioned["eval"].pk]
    assert (evaluation["a_model_version"], evaluation["b_model_version"]) == ("v1", "base")
    assert by_id[versioned["round1"].pk]["a_model_version"] == "base"


def test_the_card_names_versions_and_which_version_sampled_each_round(team, versioned):
    card = export_card(team.project, "trl", PairOptions(versions=["v1"]))
    assert "- round 1: 1 pairs (sampled by base)" in card
    assert "- round 2: 2 pairs (sampled by v1)" in card
    assert "- base: 3 completions" in card and "- v1: 3 completions" in card
    assert "model version " not in card  # no database ids
    assert "- `versions`: v1" in card


def test_it_filters_by_version(team, versioned):
    def compared(**options: Any) -> set[int]:
        rows = export_rows(team.project, "trl", PairOptions.from_dict(options))
        return {r["comparison_id"] for r in rows}

    assert compared(versions="v1") == {versioned["round2"].pk}
    assert compared(versions="base") == {versioned["round1"].pk}
    assert compared(versions="v0") == {versioned["round1"].pk}  # v0: another name of the base
    assert compared(versions="v1", kinds="eval") == {versioned["eval"].pk}
    assert compared(versions="base, v1") == {versioned["round1"].pk, versioned["round2"].pk}
    judged = export_rows(team.project, "judgments", PairOptions(versions=["base"], kinds=["eval"]))
    assert [r["comparison_id"] for r in judged] == [versioned["eval"].pk]


def test_it_refuses_unknown_and_malformed_version_names(team, versioned):
    with pytest.raises(InvalidInput, match=r'"versions": the project has no version v7 \(it has'):
        stream_export(team.project, "trl", PairOptions(versions=["v7"]))
    with pytest.raises(InvalidInput, match="\"versions\": 'latest' is not a version name"):
        PairOptions.from_dict({"versions": "latest"})


def test_the_api_filters_by_version_and_refuses_unknown_ones(team, versioned):
    client = api_for(team.lead)
    url = f"/api/projects/{team.project.pk}/export/"
    response = client.get(url, {"format": "trl", "versions": "v1"})
    assert response.status_code == 200
    rows = jsonl_rows(b"".join(response.streaming_content))
    assert [(r["comparison_id"], r["chosen_model_version"]) for r in rows] == [
        (versioned["round2"].pk, "v1")
    ]
    bad = client.get(url, {"format": "trl", "versions": "v9"})
    assert bad.status_code == 400
    assert "no version v9" in bad.json()["detail"]
    zipped = client.get(url, {"format": "parquet", "bundle": "zip", "versions": "v9"})
    assert zipped.status_code == 400
    card = client.get(url, {"format": "card", "versions": "v9"})
    assert card.status_code == 400


def test_the_export_page_filters_by_version(team, versioned, client):
    client.force_login(team.lead)
    page = client.get(f"/projects/{team.project.pk}/datasets/").content.decode()
    assert 'name="versions"' in page
    url = f"/projects/{team.project.pk}/datasets/export/"
    form = {"format": "trl", "bundle": "file", "aggregation": "majority", "weight": "uniform"}
    response = client.post(url, {**form, "versions": "base"})
    assert response.status_code == 200
    rows = jsonl_rows(b"".join(response.streaming_content))
    assert [r["comparison_id"] for r in rows] == [versioned["round1"].pk]
    bad = client.post(url, {**form, "versions": "v4"})
    assert bad.status_code == 400
    assert "no version v4" in bad.content.decode()


def test_the_export_command_filters_by_version(team, versioned, tmp_path):
    out = tmp_path / "v1.jsonl"
    call_command("export_data", team.project.slug, "--format", "trl", "--versions", "v1", "-o", out)
    rows = jsonl_rows(out.read_bytes())
    assert [r["chosen_model_version"] for r in rows] == ["v1"]
    slug = team.project.slug
    with pytest.raises(CommandError, match="no version v3"):
        call_command("export_data", slug, "--format", "trl", "--versions", "v3", "-o", out)
    zipped = tmp_path / "all.zip"
    call_command("export_data", slug, "--format", "csv", "--bundle", "zip", "-o", zipped)
    with zipfile.ZipFile(zipped) as archive:
        card = archive.read("README.md").decode()
    assert "- round 2: 2 pairs (sampled by v1)" in card
