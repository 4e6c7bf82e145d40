"""Large projects: a view after a change shows the latest figures and a worker refreshes them."""

from __future__ import annotations

from typing import Any
from unittest import mock

from django.core.cache import cache
from kombu.exceptions import OperationalError

from annotate.quality import report

from .helpers import judge


def test_a_large_project_shows_the_latest_figures_while_a_worker_refreshes(
    team: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.PREFLOOP_QUALITY_INLINE_JUDGMENTS = 1
    team.project.overlap = 2
    team.project.save()
    pairs = team.pairs(3)
    judge(team.alice, pairs[0], "a")
    judge(team.bob, pairs[0], "a")
    first = report.quality_report(team.project)  # the first view computes inline
    assert first["judgments"] == 2 and first["stale"] is False and first["computed_at"]

    judge(team.alice, pairs[1], "b")
    with (
        mock.patch("annotate.quality.report.refresh_quality.delay") as delay,
        django_capture_on_commit_callbacks(execute=True),
    ):
        stale = report.quality_report(team.project)
        again = report.quality_report(team.project)
    assert stale["judgments"] == 2 and stale["stale"] is True
    assert again["stale"] is True
    delay.assert_called_once_with(team.project.pk)  # one refresh queued, not one per view

    from annotate.quality.tasks import refresh_quality

    assert refresh_quality(team.project.pk) == 3
    fresh = report.quality_report(team.project)
    assert fresh["judgments"] == 3 and fresh["stale"] is False


def test_a_page_shows_the_latest_figures_when_the_refresh_cannot_be_queued(
    team: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.PREFLOOP_QUALITY_INLINE_JUDGMENTS = 1
    team.project.overlap = 2
    team.project.save()
    pairs = team.pairs(2)
    judge(team.alice, pairs[0], "a")
    judge(team.bob, pairs[0], "a")
    report.quality_report(team.project)
    judge(team.alice, pairs[1], "b")
    down = OperationalError("[Errno 111] Connection refused")  # what Celery raises
    with mock.patch("annotate.quality.report.refresh_quality.delay", side_effect=down) as delay:
        with django_capture_on_commit_callbacks(execute=True):
            stale = report.quality_report(team.project)
        with django_capture_on_commit_callbacks(execute=True):
            again = report.quality_report(team.project)
    assert stale["judgments"] == 2 and stale["stale"] is True
    assert again["stale"] is True
    assert delay.call_count == 2  # the next view tries again
    cache.clear()


def test_a_small_project_is_always_current(team: Any, settings: Any) -> None:
    settings.PREFLOOP_QUALITY_INLINE_JUDGMENTS = 1000
    pairs = team.pairs(2)
    judge(team.alice, pairs[0], "a")
    assert report.quality_report(team.project)["judgments"] == 1
    judge(team.alice, pairs[1], "a")
    current = report.quality_report(team.project)
    assert current["judgments"] == 2 and current["stale"] is False
    cache.clear()
