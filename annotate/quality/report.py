"""The quality report a lead reads: cached figures, named, with each annotator's pause state.

The figures (``figures.compute``) read every judgment of the project, so they are cached under
a key made of what they depend on: the number of judgments and the latest judgment id (a new
judgment or an undo changes them), the gold answers and the fast-judgment floor. A page view
between two judgments is a cache hit. Pause state and names are read live: they change without
a judgment.

On a large project (more than ``PREFLOOP_QUALITY_INLINE_JUDGMENTS`` judgments) a view after a
change does not recompute in the web process: it shows the latest figures, says how many
judgments they cover, and asks a worker to refresh them (``refresh_quality``,
one at a time per project). The cache is shared by every process (file system or Redis), so the
worker's figures reach the web. Only the first view of a large project computes inline.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone
from kombu.exceptions import OperationalError

from annotate.datasets.exporters import pseudonym
from annotate.models import Comparison, Judgment, Membership, Project

from . import figures, repeats

log = logging.getLogger(__name__)

# A day: keys change with every judgment, so old entries are never read again anyway.
CACHE_SECONDS = 24 * 3600


# How long a refresh may run before another one may be queued (a worker that died mid-way).
REFRESH_LOCK_SECONDS = 15 * 60


def cache_key(project: Project) -> str:
    return _key_and_count(project)[0]


def _key_and_count(project: Project) -> tuple[str, int]:
    agg = Judgment.objects.filter(project=project).aggregate(n=Count("pk"), last=Max("pk"))
    gold = list(
        Comparison.objects.filter(project=project)
        .exclude(gold_choice="")
        .order_by("pk")
        .values_list("pk", "gold_choice")
    )
    # created_at tells apart a project that reuses the id of a deleted one.
    basis = repr((project.created_at, agg["n"], agg["last"], gold, project.fast_judgment_seconds))
    digest = hashlib.sha256(basis.encode()).hexdigest()[:32]
    return f"prefloop:quality:{project.pk}:{digest}", agg["n"]


def _latest_key(project: Project) -> str:
    return f"prefloop:quality:{project.pk}:{project.created_at.timestamp()}:latest"


def _refresh_lock(project: Project) -> str:
    return f"prefloop:quality:{project.pk}:refreshing"


def refresh(project: Project) -> dict[str, Any]:
    """Compute the project's figures now and store them as current and as the latest."""
    key, _ = _key_and_count(project)
    data = figures.compute(project)
    data["computed_at"] = timezone.now().isoformat()
    cache.set(key, data, CACHE_SECONDS)
    cache.set(_latest_key(project), data, CACHE_SECONDS * 30)
    cache.delete(_refresh_lock(project))
    return data


@shared_task(name="annotate.quality.refresh_quality")
def refresh_quality(project_id: int) -> int:
    """Recompute a project's quality figures into the shared cache; returns the judgments.
    The worker finds it through ``annotate.quality.tasks``."""
    project = Project.objects.filter(pk=project_id).first()
    return 0 if project is None else int(refresh(project)["judgments"])


def cached_figures(project: Project) -> tuple[dict[str, Any], bool]:
    """The figures, and whether they are older than the project's latest judgments (a refresh
    is then on its way)."""
    key, n = _key_and_count(project)
    found = cache.get(key)
    if found is not None:
        return found, False
    latest = None
    if n > settings.PREFLOOP_QUALITY_INLINE_JUDGMENTS:
        latest = cache.get(_latest_key(project))
    if latest is None:
        return refresh(project), False
    if cache.add(_refresh_lock(project), 1, REFRESH_LOCK_SECONDS):
        transaction.on_commit(lambda: _queue_refresh(project))
    return latest, True


def _queue_refresh(project: Project) -> None:
    """Queue the refresh; with the broker down, log it and let the next view try again rather
    than fail the page."""
    try:
        refresh_quality.delay(project.pk)
    except OperationalError as exc:
        log.warning("could not queue the quality refresh of %s: %s", project, exc)
        cache.delete(_refresh_lock(project))


def quality_report(project: Project, *, pseudonyms: bool = False) -> dict[str, Any]:
    """The figures with annotators named by username, or by the exports' salted pseudonyms.

    Members who have judged nothing yet are listed too (with zero judgments), so that a paused
    or idle annotator is visible.
    """
    data, stale = cached_figures(project)
    members = {
        f"user:{m.user_id}": m
        for m in Membership.objects.filter(project=project).select_related("user")
    }

    def name(key: str) -> str:
        if pseudonyms:
            return pseudonym(project, key)
        member = members.get(key)
        if member is not None:
            return member.user.get_username()
        if key.startswith("external:"):
            return key.removeprefix("external:")
        # A user who judged here and has left the project since.
        return _username(key)

    rows = []
    keys = list(data["annotators"])
    keys += [k for k, m in members.items() if k not in data["annotators"] and m.role == "annotator"]
    for key in keys:
        figures_row = data["annotators"].get(key) or _empty_row()
        member = members.get(key)
        rows.append(
            {
                "annotator": name(key),
                # Hidden with the names; members can still be resumed by pseudonym.
                "username": member.user.get_username() if member and not pseudonyms else None,
                "member": member is not None,
                **figures_row,
                "paused": bool(member and member.paused),
                "paused_reason": member.paused_reason if member and member.paused else "",
            }
        )
    agreement = dict(data["agreement"])
    agreement["cohen_kappa"] = [
        {**row, "annotators": [name(k) for k in row["annotators"]]}
        for row in agreement["cohen_kappa"]
    ]
    return {
        "judgments": data["judgments"],
        "computed_at": data.get("computed_at"),
        "stale": stale,
        "names": "pseudonyms" if pseudonyms else "usernames",
        "agreement": agreement,
        "project": data["project"],
        "annotators": rows,
        "settings": {
            "gold_min_items": project.gold_min_items,
            "gold_min_accuracy": project.gold_min_accuracy,
            "fast_judgment_seconds": project.fast_judgment_seconds,
            "cohen_min_shared_items": figures.COHEN_MIN_SHARED,
            "repeat_rate": project.repeat_rate,
            "repeat_delay": repeats.REPEAT_DELAY,
        },
    }


def member_named(project: Project, name: str, *, pseudonyms: bool) -> str | None:
    """The username of the member shown as ``name`` (a username, or a pseudonym)."""
    for member in Membership.objects.filter(project=project).select_related("user"):
        shown = (
            pseudonym(project, f"user:{member.user_id}")
            if pseudonyms
            else member.user.get_username()
        )
        if shown == name:
            return member.user.get_username()
    return None


def _username(key: str) -> str:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(pk=int(key.removeprefix("user:"))).first()
    return user.get_username() if user else key


def _empty_row() -> dict[str, Any]:  # the figures of someone who has judged nothing
    return {
        "judgments": 0,
        "left": 0,
        "right": 0,
        "left_rate": None,
        "left_p_value": None,
        "longer_items": 0,
        "longer_win_rate": None,
        "team_longer_items": 0,
        "team_longer_win_rate": None,
        "median_seconds": None,
        "fast_judgments": 0,
        "gold_items": 0,
        "gold_accuracy": None,
        **repeats.flip_figures(0, 0, 0),
    }
