"""Progress shown around the annotate page, the project page and the project list.

The annotator's own figures are exact on every view: counting their judgments and their closed
pairs reads their own index entries only. The project's totals (pairs, judgments done toward
the overlap, pairs still open) need every pair of the project; at a million pairs that takes
about a second, which the annotate page would otherwise pay on every swap. Below
``PREFLOOP_PROGRESS_EXACT_PAIRS`` pairs they are counted on every view. Above it they are kept
in the shared cache for thirty times as long as counting took (2 to 60 seconds), and while one
view counts them again the others show the last totals, so no more than one view per project
at a time waits for the count.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, QuerySet, Sum, Value
from django.db.models.functions import Least

from .models import Assignment, Comparison, Judgment, Project

# Counting at most this share of the time: totals that took t seconds are kept for t / share.
_SHARE = 1 / 30
_MIN_SECONDS = 2.0
_MAX_SECONDS = 60.0
# The last totals are shown while a refresh runs; a refresh that died frees its lock by then.
_LATEST_SECONDS = 3600
_LOCK_SECONDS = 120


@dataclass(frozen=True)
class Progress:
    mine_done: int
    mine_remaining: int
    project_done: int
    project_total: int

    @property
    def mine_percent(self) -> int:
        total = self.mine_done + self.mine_remaining
        return round(100 * self.mine_done / total) if total else 100

    @property
    def project_percent(self) -> int:
        return round(100 * self.project_done / self.project_total) if self.project_total else 100


@dataclass(frozen=True)
class ProjectTotals:
    """The project's work pairs (gold pairs with an answer and hidden repeats are checks, not
    work toward the overlap), the judgments they hold up to the overlap, and those still open."""

    pairs: int
    done: int
    open: int
    # when they were counted (seconds since the epoch), and whether they come from the cache
    counted_at: float = 0.0
    kept: bool = False


def _work(project: Project) -> QuerySet[Comparison]:
    return Comparison.objects.filter(Comparison.work(), project=project)


def _aware(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def count_totals(project: Project) -> ProjectTotals:
    """The project's totals, counted now: one pass over its pairs."""
    counted_at = time.time()
    row = _work(project).aggregate(
        pairs=Count("pk"),
        done=Sum(Least("judgment_count", Value(project.overlap))),
        open=Count("pk", filter=Q(judgment_count__lt=project.overlap)),
    )
    return ProjectTotals(
        pairs=row["pairs"], done=row["done"] or 0, open=row["open"], counted_at=counted_at
    )


def _key(project: Project) -> str:
    # created_at tells apart a project that reuses a deleted one's id; the overlap is part of
    # every total.
    return f"prefloop:progress:{project.pk}:{project.created_at.timestamp()}:{project.overlap}"


def project_totals(project: Project) -> ProjectTotals:
    """The project's totals: counted now for a project under the threshold, else from the
    cache as described above."""
    key = _key(project)
    found = cache.get(key)
    if found is not None:
        return ProjectTotals(**found, kept=True)
    latest = cache.get(f"{key}:latest")
    lock = f"{key}:refreshing"
    if latest is not None and not cache.add(lock, 1, _LOCK_SECONDS):
        return ProjectTotals(**latest, kept=True)
    started = time.monotonic()
    totals = count_totals(project)
    took = time.monotonic() - started
    if totals.pairs >= settings.PREFLOOP_PROGRESS_EXACT_PAIRS:
        keep = min(_MAX_SECONDS, max(_MIN_SECONDS, took / _SHARE))
        stored = {k: v for k, v in asdict(totals).items() if k != "kept"}
        cache.set(key, stored, keep)
        cache.set(f"{key}:latest", stored, _LATEST_SECONDS)
    if latest is not None:
        cache.delete(lock)
    return totals


def progress(project: Project, user: Any) -> Progress:
    """Judgments done and still possible, for this annotator and for the project."""
    totals = project_totals(project)
    mine_done = Judgment.objects.filter(project=project, annotator=user).count()
    # Pairs skipped once still count as remaining: they come back after the rest. Open pairs
    # this annotator has closed (judged, or skipped for good) are not theirs to do.
    mine = Assignment.objects.filter(annotator=user, project=project)
    closed_open = mine.filter(
        Q(status=Assignment.Status.DONE) | Q(skips__gte=Assignment.MAX_SKIPS),
        Comparison.work("comparison__"),
        comparison__judgment_count__lt=project.overlap,
    )
    remaining = totals.open - closed_open.count()
    if totals.kept:
        # Kept totals counted a pair this annotator has filled since as open.
        filled = Judgment.objects.filter(
            project=project, annotator=user, created_at__gte=_aware(totals.counted_at)
        )
        remaining -= filled.filter(
            Comparison.work("comparison__"), comparison__judgment_count__gte=project.overlap
        ).count()
    return Progress(
        mine_done=mine_done,
        mine_remaining=max(0, remaining),
        project_done=min(totals.done, totals.pairs * project.overlap),
        project_total=totals.pairs * project.overlap,
    )
