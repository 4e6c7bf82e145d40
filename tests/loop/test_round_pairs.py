"""The pairs a round trains on, as the loop page and the rounds API count them, equal the rows of
the export that training's label rule gives, and every other judged pair has its reason shown."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from annotate.models import Comparison
from tests.conftest import api_for
from tests.datasets.conftest import jsonl_rows, vote
from tests.factories import ComparisonFactory, CompletionFactory, UserFactory
from training import services
from training.loop_settings import LoopSettings
from training.models import ModelVersion, Round
from training.services.round_stats import pair_counts
from training.services.training_data import round_pairs


def _pair(round_: Round, *choices: str, kind: str = Comparison.Kind.TRAIN) -> Comparison:
    comparison = ComparisonFactory(project=round_.project, round=round_.number, kind=kind)
    for side in ("completion_a", "completion_b"):
        setattr(
            comparison,
            side,
            CompletionFactory(prompt=comparison.prompt, model_version_id=round_.policy_id),
        )
    comparison.save()
    for choice in choices:
        vote(comparison, choice, UserFactory())
    return comparison


@pytest.fixture
def rounds(team: Any) -> dict[str, Any]:
    """Round 1 (sampled by base) with every way a judged pair can miss training; round 2 (by v1)."""
    base = services.base_version(team.project)
    first = Round.objects.create(
        project=team.project,
        number=1,
        policy=base,
        state=Round.State.PROMOTED,
        settings={"replay_share": 1.0},
    )
    trained = [_pair(first, "a", "a"), _pair(first, "b")]
    _pair(first, "tie")  # a single-vote tie
    _pair(first, "both_bad", "both_bad")  # both bad
    _pair(first, "a", "b")  # disagreement
    _pair(first, "a", "tie", "tie")  # ties beat the side
    _pair(first, "a", kind=Comparison.Kind.EVAL)
    _pair(first, "a", kind=Comparison.Kind.GOLD)
    _pair(first)  # not judged yet
    v1 = ModelVersion.objects.create(
        project=team.project, number=1, spec="v1", parent=base, trained_in=first
    )
    second = Round.objects.create(
        project=team.project,
        number=2,
        policy=v1,
        state=Round.State.COLLECTING,
        settings={"replay_share": 0.5},
    )
    _pair(second, "b", "b")
    return {"first": first, "second": second, "trained": trained, "v1": v1}


def _export_rows(team: Any, **query: Any) -> list[dict[str, Any]]:
    response = api_for(team.lead).get(f"/api/projects/{team.project.pk}/export/", query)
    assert response.status_code == 200
    return jsonl_rows(b"".join(response.streaming_content))


def test_the_counts_match_training_and_the_export(team, rounds):
    first = rounds["first"]
    counts = pair_counts(first)
    own, replayed = round_pairs(first, LoopSettings.from_dict(first.settings))
    assert counts.trained == len(own) - replayed == 2
    exported = _export_rows(team, format="trl", rounds="1", kinds="train")
    assert {r["comparison_id"] for r in exported} == {c.pk for c in rounds["trained"]}
    assert counts.trained == len(exported)
    assert counts.not_trained == {
        "single_vote_tie": 1,
        "disagreement": 1,
        "tie": 1,
        "both_bad": 1,
        "eval": 1,
        "gold": 1,
    }
    assert counts.judged == counts.trained + counts.not_trained_total == 8
    assert counts.unjudged == 1 and counts.replayed == 0
    assert counts.reasons[0] == "1 single-vote tie: one vote, and it said tie"


def test_a_later_round_counts_its_replayed_pairs_as_training_does(team, rounds):
    second = rounds["second"]
    counts = pair_counts(second)
    pairs, replayed = round_pairs(second, LoopSettings.from_dict(second.settings))
    assert (counts.trained, counts.replayed) == (1, 1)
    assert (len(pairs) - replayed, replayed) == (counts.trained, counts.replayed)


def test_the_loop_page_shows_the_count_its_export_link_and_the_reasons(team, rounds, client):
    client.force_login(team.lead)
    body = client.get(f"/projects/{team.project.pk}/loop/").content.decode()
    cell = body[body.index('id="round-1-pairs"') :]
    cell = cell[: cell.index("</div>")]
    shown = int(re.search(r'class="pairs-trained"[^>]*>(\d+)<', cell)[1])
    href = html.unescape(re.search(r'href="([^"]+)"', cell)[1])
    download = client.get(href)
    assert download.status_code == 200
    assert shown == len(jsonl_rows(b"".join(download.streaming_content))) == 2
    for reason in (
        "1 single-vote tie",
        "1 both-bad pair",
        "1 disagreement",
        "1 tie:",
        "1 eval pair",
        "1 gold pair",
        "1 not judged yet",
        "6 of 8 judged not trained",
    ):
        assert reason in cell, reason
    second = body[body.index('id="round-2-pairs"') :]
    assert "+ 1 replayed" in second[: second.index("</div>")]


def test_the_rounds_api_reports_pair_counts_and_version_names(team, rounds):
    response = api_for(team.lead).get(f"/api/projects/{team.project.pk}/rounds/")
    assert response.status_code == 200
    first, second = response.json()
    assert first["pairs"] == pair_counts(rounds["first"]).to_dict()
    assert first["pairs"]["trained"] == 2
    assert first["pairs"]["export"] == {"rounds": [1], "kinds": ["train"], "weight": "uniform"}
    exported = _export_rows(team, format="trl", **{"rounds": "1", "kinds": "train"})
    assert len(exported) == first["pairs"]["trained"]
    assert (first["policy"], first["policy_label"]) == (0, "base")
    assert (second["policy"], second["policy_label"]) == (1, "v1")
    assert (first["new_version"], first["new_version_label"]) == (1, "v1")
    assert (second["new_version"], second["new_version_label"]) == (None, None)


def test_the_counts_follow_new_votes(team, rounds):
    first = rounds["first"]
    assert pair_counts(first).trained == 2
    unjudged = Comparison.objects.get(round=1, kind=Comparison.Kind.TRAIN, judgment_count=0)
    vote(unjudged, "b", UserFactory())
    counts = pair_counts(first)
    assert (counts.trained, counts.unjudged, counts.judged) == (3, 0, 9)
    assert pair_counts(rounds["second"]).replayed == 2  # half of round 1's three, rounded
