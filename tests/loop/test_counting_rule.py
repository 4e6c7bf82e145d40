"""Under a project's counting rule, training, the export, the loop page's pair count and the
dataset card all count the same judgments."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command

from annotate.models import Comparison, Membership
from tests.conftest import api_for
from tests.datasets.conftest import jsonl_rows, vote
from tests.factories import ComparisonFactory, CompletionFactory, UserFactory
from training import services
from training.loop_settings import LoopSettings
from training.models import Round
from training.services.round_stats import pair_counts
from training.services.training_data import round_pairs


def _pair(round_: Round, *votes: tuple[Any, str], **fields: Any) -> Comparison:
    comparison = ComparisonFactory(project=round_.project, round=round_.number, **fields)
    for side in ("completion_a", "completion_b"):
        setattr(
            comparison,
            side,
            CompletionFactory(prompt=comparison.prompt, model_version_id=round_.policy_id),
        )
    comparison.save()
    for user, choice, *rest in votes:
        vote(comparison, choice, user, **(rest[0] if rest else {}))
    return comparison


@pytest.fixture
def ruled(team: Any) -> dict[str, Any]:
    """Round 1 of a project that leaves out paused annotators (bob), annotators under 60% gold
    accuracy after 2 gold pairs (carol: 0 of 2) and judgments under 2 s, weighting by gold."""
    project = team.project
    project.gold_min_items = 2
    project.count_skip_paused = True
    project.count_min_gold_accuracy = 0.6
    project.count_skip_fast = True
    project.count_weight = "gold_accuracy"
    project.save()
    Membership.objects.filter(project=project, user=team.bob).update(paused=True)
    carol = UserFactory(username="carol")
    first = Round.objects.create(
        project=project,
        number=1,
        policy=services.base_version(project),
        state=Round.State.COLLECTING,
    )
    for _ in range(2):
        _pair(first, (carol, "b"), (team.alice, "a"), kind=Comparison.Kind.GOLD, gold_choice="a")
    slow = {"duration_ms": 9000}
    kept = _pair(first, (team.alice, "a", slow), (carol, "b", slow))  # carol left out: a
    flipped = _pair(first, (team.alice, "a", {"duration_ms": 500}), (UserFactory(), "b", slow))
    _pair(first, (team.bob, "a", slow))  # only a paused annotator: no counted vote
    _pair(first, (carol, "a", slow), (team.alice, "a", {"duration_ms": 10}))  # none counted
    return {"project": project, "round": first, "kept": kept, "flipped": flipped}


def _export(team: Any, **query: Any) -> list[dict[str, Any]]:
    response = api_for(team.lead).get(f"/api/projects/{team.project.pk}/export/", query)
    assert response.status_code == 200, response.content
    return jsonl_rows(b"".join(response.streaming_content))


def test_training_the_export_and_the_pair_count_agree_under_the_rule(team, ruled):
    first = ruled["round"]
    pairs, replayed = round_pairs(first, LoopSettings.from_dict(first.settings))
    exported = _export(team, format="trl", rounds="1", kinds="train")
    assert [p.comparison_id for p in pairs] == [r["comparison_id"] for r in exported]
    assert [r["comparison_id"] for r in exported] == [ruled["kept"].pk, ruled["flipped"].pk]
    assert [r["label"] for r in exported] == ["a", "b"]
    # gold-accuracy weights: alice 2/2 = 1.0; the other voter has no gold pair, so 1.0 as well
    assert [p.weight for p in pairs] == [r["weight"] for r in exported] == [1.0, 1.0]
    counts = pair_counts(first)
    assert counts.trained == len(exported) == 2
    assert counts.not_trained == {"uncounted": 2, "gold": 2}
    assert counts.judged == counts.trained + counts.not_trained_total
    assert "2 pairs without counted votes: the project's counting rule" in counts.reasons[0]
    # the loop page's download link gives the same rows
    assert len(_export(team, **dict(p.split("=") for p in counts.export_query.split("&")))) == 2


def test_an_export_may_override_the_rule_and_training_follows_the_project(team, ruled):
    everything = _export(
        team,
        format="trl",
        rounds="1",
        kinds="train",
        skip_paused="false",
        skip_fast="false",
        min_gold_accuracy="0",
        weight="uniform",
        include_ties="true",
    )
    # every vote counts: the two ruled pairs become ties, the two uncounted ones give "a"
    assert [r["label"] for r in everything] == ["tie", "tie", "a", "a"]
    first = ruled["round"]
    pairs, _ = round_pairs(first, LoopSettings.from_dict(first.settings))
    assert [p.comparison_id for p in pairs] == [ruled["kept"].pk, ruled["flipped"].pk]


def test_the_pair_count_follows_a_change_of_rule(team, ruled):
    first = ruled["round"]
    assert pair_counts(first).trained == 2
    project = ruled["project"]
    project.count_skip_paused = False
    project.save()
    counts = pair_counts(Round.objects.get(pk=first.pk))
    assert counts.trained == 3 == len(_export(team, format="trl", rounds="1", kinds="train"))
    Membership.objects.filter(project=project, user=team.bob).update(paused=False)
    project.count_skip_paused = True
    project.save()
    assert pair_counts(Round.objects.get(pk=first.pk)).trained == 3


def test_the_card_states_the_rule_and_what_it_left_out(team, ruled):
    response = api_for(team.lead).get(
        f"/api/projects/{team.project.pk}/export/", {"format": "card", "kinds": "train"}
    )
    card = b"".join(response.streaming_content).decode()
    section = card[card.index("## Which judgments count") :]
    assert "- Judgments of paused annotators are left out." in section
    assert "- Annotators below 60% gold accuracy (after 2 gold pairs) are left out." in section
    assert "- Judgments faster than 2 s are left out." in section
    assert "- Pairs are weighted by their voters' gold accuracy." in section
    # train pairs: bob 1 (paused), carol 2 (low gold), alice 2 fast
    assert "5 judgments of the selected pairs were left out:" in section
    assert "- paused annotators: 1" in section
    assert "- annotators below the gold-accuracy threshold: 2" in section
    assert "- fast judgments: 2" in section
    assert "- `weight`: gold_accuracy" in card
    relaxed = api_for(team.lead).get(
        f"/api/projects/{team.project.pk}/export/",
        {"format": "card", "kinds": "train", "skip_paused": "0", "skip_fast": "0"},
    )
    text = b"".join(relaxed.streaming_content).decode()
    assert "- Judgments of paused annotators count." in text
    assert "2 judgments of the selected pairs were left out:" in text


def test_the_command_line_export_applies_and_overrides_the_rule(team, ruled, tmp_path):
    out = tmp_path / "pairs.jsonl"
    args = ["export_data", team.project.slug, "--format", "trl", "--kinds", "train"]
    call_command(*args, "-o", str(out))
    assert [r["comparison_id"] for r in jsonl_rows(out.read_bytes())] == [
        ruled["kept"].pk,
        ruled["flipped"].pk,
    ]
    call_command(
        *args,
        "--skip-paused",
        "false",
        "--skip-fast",
        "false",
        "--min-gold-accuracy",
        "0",
        "--include-ties",
        "-o",
        str(out),
    )
    assert [r["label"] for r in jsonl_rows(out.read_bytes())] == ["tie", "tie", "a", "a"]
    with pytest.raises(CommandError, match="min_gold_accuracy"):
        call_command(*args, "--min-gold-accuracy", "1.5", "-o", str(out))


def test_the_judgments_export_lists_the_counted_judgments(team, ruled):
    rows = _export(team, format="judgments", kinds="train")
    # of 7 train judgments: bob's (paused), carol's two (low gold), alice's two fast ones are out
    assert len(rows) == 2
    everything = _export(team, format="judgments", kinds="train", skip_paused="0", skip_fast="0")
    assert len(everything) == 5  # carol's two stay out: min_gold_accuracy is still the project's
