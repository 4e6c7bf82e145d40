"""Stalled rounds: what blocks them, and the lead's actions (services and views)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from annotate import services as annotate_services
from annotate.errors import Conflict, InvalidInput
from annotate.models import Assignment, Comparison
from tests.factories import ComparisonFactory
from training import services
from training.models import Round, TrainingRun
from training.services import stall


def collecting_round(team: Any, n_pairs: int, *, overlap: int = 2, **settings: Any) -> Round:
    team.project.overlap = overlap
    team.project.save()
    loop_round = Round.objects.create(
        project=team.project,
        number=1,
        policy=services.base_version(team.project),
        state=Round.State.COLLECTING,
        settings=settings,
    )
    for _ in range(n_pairs):
        ComparisonFactory(project=team.project, round=1)
    return loop_round


def lease(user: Any, team: Any, pair: Comparison) -> Assignment:
    a = annotate_services.next_assignment(team.project, user)
    assert a is not None and a.comparison_id == pair.pk
    return a


def judge(user: Any, team: Any, pair: Comparison) -> None:
    lease(user, team, pair)
    data = annotate_services.JudgmentInput(choice="left", client_id=uuid.uuid4())
    annotate_services.submit_judgment(user, pair.pk, data)


def skip_twice(user: Any, team: Any, pair: Comparison) -> None:
    for _ in range(2):
        lease(user, team, pair)
        annotate_services.skip(team.project, user, pair.pk)


def stalled_by_skips(team: Any) -> tuple[Round, Comparison]:
    """Alice judged the round's one pair; Bob and the lead skipped it twice: it stays at 1/2."""
    loop_round = collecting_round(team, 1)
    (pair,) = Comparison.objects.filter(round=1)
    judge(team.alice, team, pair)
    skip_twice(team.bob, team, pair)
    skip_twice(team.lead, team, pair)
    return loop_round, pair


# --- The analysis -----------------------------------------------------------------------------


def test_a_round_that_everyone_can_still_finish_is_not_stalled(team: Any) -> None:
    loop_round = collecting_round(team, 1)
    (pair,) = Comparison.objects.filter(round=1)
    judge(team.alice, team, pair)
    skip_twice(team.bob, team, pair)  # the lead can still judge it
    found = stall.round_stall(loop_round)
    assert found is not None and not found.stalled
    assert found.remaining == 1 and found.blocked_total == 0


def test_it_names_the_pair_that_skips_keep_below_the_overlap(team: Any) -> None:
    loop_round, pair = stalled_by_skips(team)
    found = stall.round_stall(loop_round)
    assert found.stalled and found.blocked_total == 1
    (blocked,) = found.blocked
    assert blocked.comparison_id == pair.pk
    assert (blocked.judgments, blocked.needed, blocked.can_judge) == (1, 2, [])
    assert blocked.skipped_by == [("bob", 2), ("lead", 2)]
    assert found.judged_pairs == 1
    assert found.to_dict()["blocked"][0]["skipped_by"][0] == {"user": "bob", "skips": 2}


def test_one_skip_does_not_stall_a_round(team: Any) -> None:
    loop_round = collecting_round(team, 1)
    (pair,) = Comparison.objects.filter(round=1)
    judge(team.alice, team, pair)
    lease(team.bob, team, pair)
    annotate_services.skip(team.project, team.bob, pair.pk)
    skip_twice(team.lead, team, pair)
    assert not stall.round_stall(loop_round).stalled
    # ...because the pair comes back to Bob.
    lease(team.bob, team, pair)


def test_too_few_members_stall_every_pair(team: Any) -> None:
    loop_round = collecting_round(team, 3, overlap=4)
    found = stall.round_stall(loop_round)
    assert found.stalled and found.too_few_people
    assert found.blocked_total == 3 and found.available == ["alice", "bob", "lead"]
    assert all(p.can_judge == ["alice", "bob", "lead"] for p in found.blocked)


def test_a_paused_member_does_not_count_as_available(team: Any) -> None:
    loop_round = collecting_round(team, 1)
    (pair,) = Comparison.objects.filter(round=1)
    judge(team.alice, team, pair)
    skip_twice(team.bob, team, pair)
    assert not stall.round_stall(loop_round).stalled  # the lead can still judge it
    team.project.memberships.filter(user=team.lead).update(paused=True, paused_reason="gold")
    found = stall.round_stall(loop_round)
    assert found.stalled and found.available == ["alice", "bob"]
    assert found.blocked[0].can_judge == []


def test_it_shows_who_holds_leases_on_a_blocked_pair(team: Any) -> None:
    loop_round = collecting_round(team, 1, overlap=3)
    (pair,) = Comparison.objects.filter(round=1)
    skip_twice(team.bob, team, pair)
    held = lease(team.alice, team, pair)
    found = stall.round_stall(loop_round)
    assert found.stalled
    (blocked,) = found.blocked
    assert [(x.user, x.until) for x in blocked.leases] == [("alice", held.lease_expires)]
    assert blocked.can_judge == ["alice", "lead"]
    assert [x.user for x in found.leases] == ["alice"]


def test_a_min_pairs_target_the_round_can_still_reach_is_no_stall(team: Any) -> None:
    loop_round, _ = stalled_by_skips(team)
    loop_round.settings = {"trigger": "min_pairs", "min_pairs": 1}
    found = stall.round_stall(loop_round)
    assert found.blocked_total == 1 and not found.stalled


def test_it_says_when_the_round_only_waits_for_leases(team: Any) -> None:
    loop_round = collecting_round(team, 1, overlap=1)
    (pair,) = Comparison.objects.filter(round=1)
    lease(team.alice, team, pair)
    found = stall.round_stall(loop_round)
    assert not found.stalled and found.waiting_on_leases
    Assignment.objects.update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert not stall.round_stall(loop_round).waiting_on_leases


def test_only_collecting_rounds_are_analysed(team: Any) -> None:
    loop_round = collecting_round(team, 1)
    loop_round.state = Round.State.TRAINING
    assert stall.round_stall(loop_round) is None


# --- The lead's actions -----------------------------------------------------------------------


def test_releasing_leases_hands_the_pairs_out_again(team: Any) -> None:
    loop_round = collecting_round(team, 1, overlap=1)
    (pair,) = Comparison.objects.filter(round=1)
    lease(team.alice, team, pair)
    assert annotate_services.next_assignment(team.project, team.bob) is None
    assert stall.release_leases(loop_round) == 1
    assert annotate_services.next_assignment(team.project, team.bob).comparison_id == pair.pk


def test_lowering_the_target_trains_when_it_is_reached(
    team: Any, django_capture_on_commit_callbacks: Any
) -> None:
    loop_round, _ = stalled_by_skips(team)
    found = stall.round_stall(loop_round)
    assert found.suggested_target == 1
    with django_capture_on_commit_callbacks(execute=False):
        assert stall.lower_target(loop_round, str(found.suggested_target)) is True
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.TRAINING
    assert loop_round.settings["trigger"] == "min_pairs" and loop_round.settings["min_pairs"] == 1


def test_a_lowered_target_not_yet_reached_keeps_collecting(team: Any) -> None:
    loop_round = collecting_round(team, 3)
    assert stall.lower_target(loop_round, 2) is False
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.COLLECTING
    assert loop_round.settings == {"trigger": "min_pairs", "min_pairs": 2}


@pytest.mark.parametrize("bad", ["many", "", None, 0, 4])
def test_it_refuses_a_target_outside_the_rounds_pairs(team: Any, bad: Any) -> None:
    loop_round = collecting_round(team, 3)
    with pytest.raises(InvalidInput, match="min_pairs"):
        stall.lower_target(loop_round, bad)
    loop_round.refresh_from_db()
    assert loop_round.settings == {}


def test_actions_need_a_collecting_round(team: Any) -> None:
    loop_round = collecting_round(team, 1)
    Round.objects.filter(pk=loop_round.pk).update(state=Round.State.TRAINING)
    for action in (
        lambda: stall.release_leases(loop_round),
        lambda: stall.lower_target(loop_round, 1),
    ):
        with pytest.raises(Conflict, match="training"):
            action()


def test_training_on_what_is_judged_needs_the_confirmed_count(
    team: Any, django_capture_on_commit_callbacks: Any
) -> None:
    loop_round, _ = stalled_by_skips(team)
    with pytest.raises(Conflict, match="1 judged pairs now, not 2"):
        stall.train_on_judged(loop_round, "2")
    with pytest.raises(InvalidInput, match="pairs"):
        stall.train_on_judged(loop_round, "two")
    assert not TrainingRun.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        run = stall.train_on_judged(loop_round, "1")
    assert run.num_pairs == 1
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.TRAINING


# --- The page -------------------------------------------------------------------------------


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_loop_page_names_the_stall_and_its_blockers(team: Any) -> None:
    loop_round, pair = stalled_by_skips(team)
    body = _client(team.lead).get(f"/projects/{team.project.pk}/loop/").content.decode()
    assert 'id="stall"' in body and f'data-comparison="{pair.pk}"' in body
    assert "bob (twice), lead (twice)" in body
    assert 'id="lower-target"' in body and 'id="train-judged"' in body
    status = _client(team.lead).get(
        f"/projects/{team.project.pk}/loop/status/", HTTP_HX_REQUEST="true"
    )
    assert 'id="stall"' in status.content.decode()


def test_the_loop_page_is_quiet_when_nothing_blocks(team: Any) -> None:
    collecting_round(team, 2)
    body = _client(team.lead).get(f"/projects/{team.project.pk}/loop/").content.decode()
    assert 'id="stall"' not in body and 'id="stall-waiting"' not in body


def test_the_train_on_judged_page_confirms_the_count(
    team: Any, django_capture_on_commit_callbacks: Any
) -> None:
    loop_round, _ = stalled_by_skips(team)
    url = f"/projects/{team.project.pk}/loop/rounds/{loop_round.pk}/train-judged/"
    client = _client(team.lead)
    page = client.get(url).content.decode()
    assert "Train on 1 pair" in page and 'name="pairs" value="1"' in page
    stale = client.post(url, {"pairs": "5"}, follow=True)
    assert "not 5: confirm again" in stale.content.decode()
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.COLLECTING
    with django_capture_on_commit_callbacks(execute=False):
        done = client.post(url, {"pairs": "1"}, follow=True)
    assert "Training queued on 1 pairs." in done.content.decode()
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.TRAINING


def test_the_actions_are_for_leads_only(team: Any) -> None:
    loop_round = collecting_round(team, 1, overlap=1)
    (pair,) = Comparison.objects.filter(round=1)
    lease(team.alice, team, pair)
    base = f"/projects/{team.project.pk}/loop/rounds/{loop_round.pk}"
    for path in ("release-leases/", "lower-target/", "train-judged/"):
        assert _client(team.alice).post(f"{base}/{path}", {"min_pairs": 1}).status_code == 403
        assert _client(team.outsider).post(f"{base}/{path}").status_code == 404
    assert _client(team.lead).get(f"{base}/release-leases/").status_code == 405
    assert (
        _client(team.lead)
        .post(f"/projects/{team.project.pk}/loop/rounds/999/release-leases/")
        .status_code
        == 404
    )
    assert Assignment.objects.get(comparison=pair).status == Assignment.Status.ACTIVE
    response = _client(team.lead).post(f"{base}/release-leases/", follow=True)
    assert "Released 1 lease:" in response.content.decode()
    assert Assignment.objects.get(comparison=pair).status == Assignment.Status.EXPIRED


def test_a_bad_target_from_the_form_is_an_error_message(team: Any) -> None:
    loop_round = collecting_round(team, 1)
    url = f"/projects/{team.project.pk}/loop/rounds/{loop_round.pk}/lower-target/"
    response = _client(team.lead).post(url, {"min_pairs": "lots"}, follow=True)
    assert response.status_code == 200
    assert "min_pairs: a whole number, got &#x27;lots&#x27;." in response.content.decode()
