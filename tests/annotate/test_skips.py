"""Skipping: a skipped pair comes back after the rest of the queue; a second skip ends it."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils import timezone

from annotate import services
from annotate.models import Assignment

from ..factories import ComparisonFactory


def judge(user, comparison_id, choice="left"):
    data = services.JudgmentInput(choice=choice, client_id=uuid.uuid4())
    return services.submit_judgment(user, comparison_id, data)


def test_it_brings_a_skipped_pair_back_after_the_rest_of_the_queue(team):
    pairs = team.pairs(3)
    first = services.next_assignment(team.project, team.alice)
    assert first.comparison_id == pairs[0].pk
    services.skip(team.project, team.alice, first.comparison_id)
    assert Assignment.objects.get(pk=first.pk).skips == 1
    shown = []
    while (a := services.next_assignment(team.project, team.alice)) is not None:
        shown.append(a.comparison_id)
        if a.comparison_id == pairs[0].pk:
            break
        judge(team.alice, a.comparison_id)
    assert shown == [pairs[1].pk, pairs[2].pk, pairs[0].pk]
    # Shown again in the order it was first drawn, and judgeable.
    again = services.next_assignment(team.project, team.alice)
    assert again.pk == first.pk and again.left_is_a == first.left_is_a
    judge(team.alice, again.comparison_id)
    assert services.next_assignment(team.project, team.alice) is None


def test_a_second_skip_releases_the_pair_for_good_for_that_annotator(team):
    team.project.overlap = 2
    team.project.save()
    (pair,) = team.pairs(1)
    for _ in range(2):
        a = services.next_assignment(team.project, team.alice)
        assert a is not None and a.comparison_id == pair.pk
        services.skip(team.project, team.alice, pair.pk)
    assert Assignment.objects.get(comparison=pair, annotator=team.alice).skips == 2
    assert services.next_assignment(team.project, team.alice) is None
    assert services.progress(team.project, team.alice).mine_remaining == 0
    # Others still get it.
    assert services.next_assignment(team.project, team.bob).comparison_id == pair.pk


def test_a_skipped_pair_counts_as_remaining_until_skipped_twice(team):
    (pair,) = team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    services.skip(team.project, team.alice, a.comparison_id)
    assert services.progress(team.project, team.alice).mine_remaining == 1


def test_a_skipped_pair_whose_return_lease_ran_out_still_waits_behind_new_pairs(team):
    first, second = team.pairs(2)
    a = services.next_assignment(team.project, team.alice)
    services.skip(team.project, team.alice, first.pk)
    b = services.next_assignment(team.project, team.alice)
    judge(team.alice, b.comparison_id)
    returned = services.next_assignment(team.project, team.alice)
    assert returned.comparison_id == first.pk
    Assignment.objects.filter(pk=a.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    services.release_expired_leases()
    new = ComparisonFactory(project=team.project)
    assert services.next_assignment(team.project, team.alice).comparison_id == new.pk


def test_the_queue_can_be_asked_for_one_rounds_pairs_only(team):
    team.project.overlap = 2
    team.project.save()
    old = ComparisonFactory(project=team.project, round=1)
    current = ComparisonFactory(project=team.project, round=2)
    a = services.next_assignment(team.project, team.alice, round_number=1)
    assert a.comparison_id == old.pk
    judge(team.alice, old.pk)
    assert services.next_assignment(team.project, team.alice, round_number=1) is None
    # A lease on another round's pair is not handed out for round 1.
    held = services.next_assignment(team.project, team.bob, round_number=2)
    assert held.comparison_id == current.pk
    assert services.next_assignment(team.project, team.bob, round_number=1).comparison_id == (
        old.pk
    )
