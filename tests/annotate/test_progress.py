"""Progress figures: exact for a small project, cached totals for a large one, and the same
numbers as counting every pair by hand."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotate import progress as progress_module
from annotate import services
from annotate.models import Assignment, Comparison, Judgment

from ..factories import ComparisonFactory


def judge_next(team: Any, user: Any, choice: str = "left") -> int:
    assignment = services.next_assignment(team.project, user)
    assert assignment is not None
    data = services.JudgmentInput(choice=choice, client_id=uuid.uuid4())
    services.submit_judgment(user, assignment.comparison_id, data)
    return assignment.comparison_id


def by_hand(team: Any, user: Any) -> tuple[int, int, int, int]:
    """(mine_done, mine_remaining, project_done, project_total), pair by pair in Python."""
    overlap = team.project.overlap
    work = [
        c
        for c in Comparison.objects.filter(project=team.project)
        if not (c.kind == Comparison.Kind.GOLD and c.gold_choice)
        and c.kind != Comparison.Kind.REPEAT
    ]
    closed = {
        a.comparison_id
        for a in Assignment.objects.filter(annotator=user, project=team.project)
        if a.status == Assignment.Status.DONE or a.skips >= Assignment.MAX_SKIPS
    }
    mine_done = Judgment.objects.filter(project=team.project, annotator=user).count()
    remaining = sum(1 for c in work if c.judgment_count < overlap and c.pk not in closed)
    done = sum(min(c.judgment_count, overlap) for c in work)
    return mine_done, remaining, done, len(work) * overlap


def figures(p: services.Progress) -> tuple[int, int, int, int]:
    return p.mine_done, p.mine_remaining, p.project_done, p.project_total


def test_it_matches_a_count_by_hand_with_gold_skips_and_full_pairs(team: Any) -> None:
    team.project.overlap = 2
    team.project.gold_min_accuracy = 0.0
    team.project.save()
    team.pairs(6)
    ComparisonFactory(project=team.project, kind=Comparison.Kind.GOLD, gold_choice="a")
    # a gold pair without its answer yet is work like any other
    ComparisonFactory(project=team.project, kind=Comparison.Kind.GOLD, gold_choice="")
    judge_next(team, team.alice)
    judge_next(team, team.bob)
    judge_next(team, team.alice)
    skipped = services.next_assignment(team.project, team.bob)
    assert skipped is not None
    services.skip(team.project, team.bob, skipped.comparison_id)
    again = services.next_assignment(team.project, team.bob)
    assert again is not None
    services.skip(team.project, team.bob, again.comparison_id)
    # a pair skipped for good is closed for bob; one skipped once comes back
    Assignment.objects.filter(pk=again.pk).update(skips=Assignment.MAX_SKIPS)
    services.next_assignment(team.project, team.alice)
    for user in (team.alice, team.bob, team.lead):
        assert figures(services.progress(team.project, user)) == by_hand(team, user)


def test_a_small_project_is_counted_on_every_view(team: Any, settings: Any) -> None:
    settings.PREFLOOP_PROGRESS_EXACT_PAIRS = 100
    team.pairs(3)
    assert services.progress(team.project, team.bob).project_done == 0
    judge_next(team, team.alice)
    assert services.progress(team.project, team.bob).project_done == 1
    assert cache.get(progress_module._key(team.project)) is None


def test_a_large_project_keeps_its_totals_and_the_annotators_own_figures_stay_exact(
    team: Any, settings: Any
) -> None:
    settings.PREFLOOP_PROGRESS_EXACT_PAIRS = 3
    team.pairs(4)
    before = services.progress(team.project, team.bob)
    assert figures(before) == (0, 4, 0, 4)
    judge_next(team, team.alice)
    judge_next(team, team.bob)
    # the project's totals are the kept ones; bob's own judgment shows at once
    after = services.progress(team.project, team.bob)
    assert (after.project_done, after.project_total) == (0, 4)
    assert (after.mine_done, after.mine_remaining) == (1, 3)
    # once the kept totals expire, they are counted again
    cache.delete(progress_module._key(team.project))
    assert figures(services.progress(team.project, team.bob)) == (1, 2, 2, 4)
    assert figures(services.progress(team.project, team.bob)) == by_hand(team, team.bob)


def test_while_one_view_counts_again_the_others_show_the_last_totals(
    team: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.PREFLOOP_PROGRESS_EXACT_PAIRS = 1
    team.pairs(2)
    services.progress(team.project, team.alice)
    key = progress_module._key(team.project)
    cache.delete(key)
    # another view holds the refresh: this one must not count the pairs
    assert cache.add(f"{key}:refreshing", 1, 60)
    monkeypatch.setattr(progress_module, "count_totals", pytest.fail)
    judge_next(team, team.alice)
    assert services.progress(team.project, team.bob).project_done == 0
    # the refresh done, the lock is free again and the next expiry counts anew
    monkeypatch.undo()
    cache.delete(f"{key}:refreshing")
    assert services.progress(team.project, team.bob).project_done == 1
    assert cache.get(f"{key}:refreshing") is None


def test_totals_are_kept_per_overlap(team: Any, settings: Any) -> None:
    settings.PREFLOOP_PROGRESS_EXACT_PAIRS = 1
    team.pairs(2)
    assert services.progress(team.project, team.bob).project_total == 2
    team.project.overlap = 3
    team.project.save()
    assert services.progress(team.project, team.bob).project_total == 6


def test_the_annotate_swap_does_not_count_a_large_project(
    team: Any, settings: Any, client: Any
) -> None:
    settings.PREFLOOP_PROGRESS_EXACT_PAIRS = 1
    team.pairs(3)
    client.force_login(team.alice)
    url = f"/projects/{team.project.pk}/annotate/"
    client.get(url, HTTP_HX_REQUEST="true")
    with CaptureQueriesContext(connection) as queries:
        r = client.get(url, HTTP_HX_REQUEST="true")
    assert r.status_code == 200 and b"mine-remaining" in r.content
    scans = [q["sql"] for q in queries.captured_queries if "SUM(" in q["sql"].upper()]
    assert scans == []
