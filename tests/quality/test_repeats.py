"""Hidden repeats: scheduled at the project's rate, served to their annotator only after the
delay with the sides swapped, outside the overlap, progress, rounds, pairs and exports; and the
flip rate they give."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from annotate import services
from annotate.datasets.labels import PairOptions, preference_pairs, selected_judgments
from annotate.errors import InvalidInput
from annotate.models import Comparison, Judgment
from annotate.quality import gold, repeats
from annotate.quality.report import quality_report
from tests.conftest import api_for
from tests.factories import ComparisonFactory

from .helpers import judge, shown_for


def _rate(team: Any, rate: float, overlap: int = 2) -> None:
    team.project.repeat_rate = rate
    team.project.overlap = overlap
    team.project.save()


def _judge_next(user: Any, team: Any, meant: str = "a") -> Comparison:
    assignment = services.next_assignment(team.project, user)
    assert assignment is not None
    data = services.JudgmentInput(choice=shown_for(assignment, meant), client_id=uuid.uuid4())
    services.submit_judgment(user, assignment.comparison_id, data)
    return assignment.comparison


def _repeats(team: Any) -> Any:
    return Comparison.objects.filter(project=team.project, kind=Comparison.Kind.REPEAT)


def test_a_rate_of_one_repeats_every_judged_pair_with_the_sides_swapped(team: Any) -> None:
    _rate(team, 1.0)
    pairs = team.pairs(3)
    judged = [_judge_next(team.alice, team) for _ in range(3)]
    assert {c.pk for c in judged} == {p.pk for p in pairs}
    made = list(_repeats(team).order_by("pk"))
    assert len(made) == 3
    for original, repeat in zip(judged, made, strict=True):
        assert repeat.repeat_of_id == original.pk and repeat.repeat_for_id == team.alice.pk
        assert repeat.completion_a_id == original.completion_b_id
        assert repeat.completion_b_id == original.completion_a_id
        assert repeat.prompt_id == original.prompt_id
        assert repeat.round is None and repeat.judgment_count == 0
    # due REPEAT_DELAY judgments after the one that scheduled it
    assert [r.repeat_due for r in made] == [n + repeats.REPEAT_DELAY for n in (1, 2, 3)]


def test_a_rate_of_zero_never_repeats(team: Any) -> None:
    _rate(team, 0.0)
    team.pairs(30)
    for _ in range(30):
        _judge_next(team.alice, team)
    assert not _repeats(team).exists()


def test_a_repeat_is_never_repeated_and_an_undone_judgment_is_not_repeated_twice(
    team: Any,
) -> None:
    _rate(team, 1.0)
    (pair,) = team.pairs(1)
    first = _judge_next(team.alice, team)
    services.undo_judgment(team.alice, project=team.project)
    assert _judge_next(team.alice, team) == first
    assert _repeats(team).count() == 1
    judgment = Judgment.objects.get(comparison=pair, annotator=team.alice)
    repeat = _repeats(team).get()
    # a judgment on the repeat itself schedules nothing
    fake = Judgment(comparison=repeat, annotator=team.alice, project=team.project, choice="a")
    assert repeats.schedule(fake) is None
    assert repeats.schedule(judgment) is None


def test_it_is_served_only_to_its_annotator_after_the_delay(team: Any) -> None:
    _rate(team, 1.0)
    pairs = team.pairs(40)
    original = _judge_next(team.alice, team)
    _rate(team, 0.0)
    (repeat,) = _repeats(team)
    # the next REPEAT_DELAY pairs are ordinary ones
    for _ in range(repeats.REPEAT_DELAY):
        assert _judge_next(team.alice, team).kind == Comparison.Kind.TRAIN
    assignment = services.next_assignment(team.project, team.alice)
    assert assignment is not None and assignment.comparison_id == repeat.pk
    # what the annotator sees is the original's two texts, on sides drawn as usual
    left, right = assignment.shown_completions()
    assert {left.pk, right.pk} == {original.completion_a_id, original.completion_b_id}
    # bob works through every ordinary pair and never gets alice's repeat
    seen_by_bob = set()
    while (a := services.next_assignment(team.project, team.bob)) is not None:
        seen_by_bob.add(a.comparison_id)
        data = services.JudgmentInput(choice="left", client_id=uuid.uuid4())
        services.submit_judgment(team.bob, a.comparison_id, data)
    assert seen_by_bob == {p.pk for p in pairs}


def test_a_due_repeat_skipped_is_dropped_and_a_round_request_gets_none(team: Any) -> None:
    _rate(team, 1.0)
    team.pairs(repeats.REPEAT_DELAY + 3)
    _judge_next(team.alice, team)
    _rate(team, 0.0)
    (repeat,) = _repeats(team)
    for _ in range(repeats.REPEAT_DELAY):
        _judge_next(team.alice, team)
    # a round's queue never offers it: repeats belong to no round
    assert services.next_assignment(team.project, team.alice, round_number=1) is None
    assert services.next_assignment(team.project, team.alice).comparison_id == repeat.pk
    services.skip(team.project, team.alice, repeat.pk)
    following = services.next_assignment(team.project, team.alice)
    assert following is not None and following.comparison_id != repeat.pk
    assert following.comparison.kind == Comparison.Kind.TRAIN


def test_a_repeat_waits_while_its_original_judgment_is_undone(team: Any) -> None:
    _rate(team, 1.0)
    team.pairs(repeats.REPEAT_DELAY + 3)
    original = _judge_next(team.alice, team)
    _rate(team, 0.0)
    (repeat,) = _repeats(team)
    for _ in range(repeats.REPEAT_DELAY):
        _judge_next(team.alice, team)
    # fake the original undone: the repeat is due, but there is nothing to compare it with
    Judgment.objects.filter(comparison=original, annotator=team.alice).delete()
    Judgment.objects.create(
        comparison=ComparisonFactory(project=team.project),
        annotator=team.alice,
        project=team.project,
        choice="a",
        left_is_a=True,
    )
    assignment = services.next_assignment(team.project, team.alice)
    assert assignment is not None and assignment.comparison_id != repeat.pk
    services.skip(team.project, team.alice, assignment.comparison_id)
    Judgment.objects.create(
        comparison=original, annotator=team.alice, project=team.project, choice="b", left_is_a=True
    )
    assert services.next_assignment(team.project, team.alice).comparison_id == repeat.pk


def test_repeats_count_toward_neither_the_overlap_nor_progress(team: Any) -> None:
    _rate(team, 0.0, overlap=1)
    pairs = team.pairs(2)
    before = services.progress(team.project, team.bob)
    _rate(team, 1.0, overlap=1)
    original = _judge_next(team.alice, team)
    assert _repeats(team).count() == 1
    assert Comparison.objects.get(pk=original.pk).judgment_count == 1
    after_bob = services.progress(team.project, team.bob)
    assert after_bob.project_total == before.project_total == 2
    assert after_bob.project_done == 1
    # bob has one pair left: the one alice did not judge; her repeat is not work for him
    assert after_bob.mine_remaining == 1
    assert services.progress(team.project, team.alice).mine_remaining == 1
    other = _judge_next(team.bob, team)
    assert other.pk == ({p.pk for p in pairs} - {original.pk}).pop()
    assert services.next_assignment(team.project, team.bob) is None


def test_a_repeat_is_in_no_round_its_trigger_or_stall(team: Any) -> None:
    from training import services as training_services
    from training.models import Round
    from training.services import stall, triggers

    _rate(team, 1.0)
    loop_round = Round.objects.create(
        project=team.project,
        number=1,
        policy=training_services.base_version(team.project),
        state=Round.State.COLLECTING,
        settings={},
    )
    for _ in range(2):
        ComparisonFactory(project=team.project, round=1)
    _judge_next(team.alice, team)
    assert _repeats(team).count() == 1
    assert triggers.round_comparisons(loop_round).count() == 2
    assert triggers.collecting_progress(loop_round) == (1, 4)
    found = stall.round_stall(loop_round)
    assert found is not None and found.remaining == 2 and found.train_total == 2


def test_repeats_are_never_pairs_nor_exported(team: Any) -> None:
    _rate(team, 1.0)
    team.pairs(repeats.REPEAT_DELAY + 1)
    original = _judge_next(team.alice, team)
    _rate(team, 0.0)
    (repeat,) = _repeats(team)
    for _ in range(repeats.REPEAT_DELAY):
        _judge_next(team.alice, team)
    assert _judge_next(team.alice, team) == repeat
    assert Comparison.objects.get(pk=repeat.pk).judgment_count == 1
    every_kind = PairOptions(kinds=list(Comparison.PAIR_KINDS))
    for options in (PairOptions(), every_kind):
        ids = {p["comparison_id"] for p in preference_pairs(team.project, options)}
        assert original.pk in ids and repeat.pk not in ids
        assert not selected_judgments(team.project, options).filter(comparison=repeat).exists()
    with pytest.raises(InvalidInput, match="kinds"):
        PairOptions(kinds=["repeat"])
    client = api_for(team.lead)
    base = f"/api/projects/{team.project.pk}/export/"
    for fmt in ("trl", "judgments"):
        body = b"".join(client.get(base, {"format": fmt}).streaming_content).decode()
        ids = [json.loads(line)["comparison_id"] for line in body.splitlines() if line]
        assert len(ids) == repeats.REPEAT_DELAY + 1
        assert original.pk in ids and repeat.pk not in ids
    card = b"".join(client.get(base, {"format": "card"}).streaming_content).decode()
    n = repeats.REPEAT_DELAY + 1
    assert f"| Pairs | {n} ({n} judged" in card and f"| Judgments | {n} |" in card
    r = client.get(base, {"format": "judgments", "kinds": "repeat"})
    assert r.status_code == 400 and "kinds" in r.json()["detail"]


def test_a_repeat_can_be_neither_imported_nor_gold(team: Any) -> None:
    _rate(team, 1.0)
    team.pairs(1)
    _judge_next(team.alice, team)
    (repeat,) = _repeats(team)
    with pytest.raises(InvalidInput, match="repeat"):
        gold.mark_gold(team.lead, team.project, repeat.pk, "a")
    assert Comparison.objects.get(pk=repeat.pk).kind == Comparison.Kind.REPEAT
    row = {"prompt": "Hi", "completion_a": "x", "completion_b": "y", "kind": "repeat"}
    r = api_for(team.lead).post(
        f"/api/projects/{team.project.pk}/import/",
        {"format": "pairs", "file": _upload(row)},
        format="multipart",
    )
    assert r.status_code == 400 and "kind" in r.json()["detail"]


def _upload(row: dict[str, Any]) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("p.jsonl", (json.dumps(row) + "\n").encode())


# --- The flip rate ------------------------------------------------------------------------------


def _repeat_judged(team: Any, user: Any, first: str, again: str) -> None:
    """``user`` judges a new pair ``first`` and its repeat ``again`` (both on the repeat's own
    A/B, as stored: the repeat's A is the original's B)."""
    (pair,) = team.pairs(1)
    repeat = repeats.schedule(judge(user, pair, first))
    assert repeat is not None
    judge(user, repeat, again, left_is_a=False)


@pytest.fixture
def flips(team: Any) -> Any:
    """alice, on the original's completions: a then a (kept), a then b (flip), b then b (kept),
    tie then a (not counted); bob: b then a (flip)."""
    _rate(team, 0.0)
    _repeat_judged(team, team.alice, "a", "b")  # repeat's b is the original's a: kept
    _repeat_judged(team, team.alice, "a", "a")  # repeat's a is the original's b: flip
    _repeat_judged(team, team.alice, "b", "a")  # kept
    _repeat_judged(team, team.alice, "tie", "b")  # a tie carries no preference to flip
    _repeat_judged(team, team.bob, "b", "b")  # flip
    return team


def test_flip_rate_by_hand(flips: Any) -> None:
    report = quality_report(flips.project)
    rows = {row["annotator"]: row for row in report["annotators"]}
    alice, bob = rows["alice"], rows["bob"]
    assert alice["repeats"] == 4 and alice["flip_items"] == 3
    assert alice["flip_rate"] == pytest.approx(1 / 3)
    assert bob["repeats"] == 1 and bob["flip_items"] == 1 and bob["flip_rate"] == 1.0
    team_figures = report["project"]
    assert team_figures["repeats"] == 5 and team_figures["flip_items"] == 4
    assert team_figures["flip_rate"] == pytest.approx(2 / 4)
    # Wilson's interval for 2 of 4, worked by hand: centre 0.5, half-width
    # 1.96 * sqrt(1/16 + 1.96^2/64) / (1 + 1.96^2/4)
    z = 1.959963984540054
    half = z * (0.25 / 4 + z * z / 64) ** 0.5 / (1 + z * z / 4)
    lo, hi = team_figures["flip_rate_ci95"]
    assert lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    assert lo == pytest.approx(0.1500, abs=1e-4) and hi == pytest.approx(0.8500, abs=1e-4)
    # agreement never sees a repeat: it is judged by one annotator
    assert report["agreement"]["items"] == 0


def test_no_repeats_no_flip_rate(team: Any) -> None:
    (pair,) = team.pairs(1)
    judge(team.alice, pair, "a")
    (row,) = [r for r in quality_report(team.project)["annotators"] if r["annotator"] == "alice"]
    assert row["flip_rate"] is None and row["flip_rate_ci95"] is None and row["flip_items"] == 0
    assert repeats.wilson_interval(0, 0) is None
    assert repeats.wilson_interval(0, 5)[0] == 0.0


def test_the_api_and_the_page_show_the_flip_rate(flips: Any, client: Any) -> None:
    body = api_for(flips.lead).get(f"/api/projects/{flips.project.pk}/quality/").json()
    rows = {row["annotator"]: row for row in body["annotators"]}
    assert rows["alice"]["flip_rate"] == pytest.approx(1 / 3)
    assert len(rows["alice"]["flip_rate_ci95"]) == 2
    assert body["settings"]["repeat_delay"] == repeats.REPEAT_DELAY
    client.force_login(flips.lead)
    page = client.get(f"/projects/{flips.project.pk}/quality/").content.decode()
    assert "Flips" in page and "33%" in page and "of 3" in page
    assert 'id="project-flip-rate">50% of 4' in page


def test_repeat_rate_is_a_project_setting(team: Any) -> None:
    client = api_for(team.lead)
    url = f"/api/projects/{team.project.pk}/"
    r = client.patch(url, {"repeat_rate": 0.2}, format="json")
    assert r.status_code == 200 and r.json()["repeat_rate"] == 0.2
    r = client.patch(url, {"repeat_rate": 1.5}, format="json")
    assert r.status_code == 400 and "repeat_rate" in json.dumps(r.json())
    team.project.refresh_from_db()
    assert team.project.repeat_rate == 0.2


def test_repeat_rate_is_on_the_settings_form_and_kept_when_left_out(team: Any, client: Any) -> None:
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/settings/"
    assert 'name="repeat_rate"' in client.get(url).content.decode()
    base = {"name": "Team project", "overlap": 1, "rationale": "off", "lease_seconds": 600}
    base["undo_seconds"] = 60
    assert client.post(url, {**base, "repeat_rate": "0.3"}).status_code == 302
    team.project.refresh_from_db()
    assert team.project.repeat_rate == 0.3
    assert client.post(url, base).status_code == 302
    team.project.refresh_from_db()
    assert team.project.repeat_rate == 0.3
    r = client.post(url, {**base, "repeat_rate": "-0.1"})
    assert r.status_code == 200 and "greater than or equal to 0" in r.content.decode()


def test_the_annotate_page_shows_a_due_repeat_like_any_pair(team: Any, client: Any) -> None:
    _rate(team, 1.0)
    team.pairs(repeats.REPEAT_DELAY + 1)
    original = _judge_next(team.alice, team)
    _rate(team, 0.0)
    (repeat,) = _repeats(team)
    for _ in range(repeats.REPEAT_DELAY):
        _judge_next(team.alice, team)
    client.force_login(team.alice)
    page = client.get(f"/projects/{team.project.pk}/annotate/").content.decode()
    assert f'data-comparison="{repeat.pk}"' in page
    assert original.completion_a.text in page and original.completion_b.text in page
    assert "Hidden repeat" not in page and "repeat_of" not in page
