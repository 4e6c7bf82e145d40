"""A project's fixed prompt splits: eval (measuring versions), dev (the promotion gate), train.

The held-out splits are drawn once, before the first round samples anything, and never
change afterwards: rounds draw their training prompts from the train split only, so no version
is ever trained on a prompt that measures it. Prompts imported later go to train unless the
import names a split.
"""

from __future__ import annotations

import math
import random

from django.db import transaction
from django.db.models import Count

from annotate.models import Project, Prompt

from ..models import Round

# Share of a project's prompts set aside to evaluate versions (`manage.py evaluate`, the
# leaderboard's eval comparisons); 20% gives 20 eval prompts for 100 prompts.
EVAL_SHARE = 0.2
# At most this many eval prompts: 200 prompts already bound a win rate's 95% interval to
# about +-0.07, and every version is sampled on each of them.
EVAL_MAX = 200
# Share of a project's prompts set aside for the promotion gate, which compares a candidate
# with the serving version on them.
DEV_SHARE = 0.1

HELD_OUT = (Prompt.Split.EVAL, Prompt.Split.DEV)


def split_counts(project: Project) -> dict[str, int]:
    """Prompts per split, every split named (0 when empty)."""
    counts = dict.fromkeys(Prompt.Split.values, 0)
    rows = Prompt.objects.filter(project=project).values("split").annotate(n=Count("pk"))
    for row in rows:
        counts[row["split"]] = row["n"]
    return counts


def ensure_splits(project: Project) -> dict[str, int]:
    """Draw the project's eval and dev prompts, once; returns the prompts per split.

    Nothing changes when any prompt of the project already sits in a held-out split (drawn
    before, or named by an import: a lead's own eval or dev set is kept as it is). Otherwise
    ``EVAL_SHARE`` of the project's prompts (at most ``EVAL_MAX``) become eval prompts and
    ``DEV_SHARE`` dev prompts, drawn with a seed of the project's id, so the same prompts give
    the same split. Only prompts no round has drawn for training are eligible, and at least one
    train prompt is left.
    """
    with transaction.atomic():
        # one draw per project, even when two rounds or commands start at once
        Project.objects.select_for_update().filter(pk=project.pk).first()
        prompts = Prompt.objects.filter(project=project)
        if prompts.filter(split__in=HELD_OUT).exists():
            return split_counts(project)
        total = prompts.count()
        used: set[int] = set()
        for ids in Round.objects.filter(project=project).values_list("prompt_ids", flat=True):
            used.update(ids)
        eligible = sorted(
            pk
            for pk in prompts.filter(split=Prompt.Split.TRAIN).values_list("pk", flat=True)
            if pk not in used
        )
        room = max(0, len(eligible) - 1)
        n_eval = min(EVAL_MAX, math.floor(total * EVAL_SHARE), room)
        n_dev = min(math.floor(total * DEV_SHARE), room - n_eval)
        drawn = random.Random(f"prefloop-splits-{project.pk}").sample(eligible, n_eval + n_dev)
        Prompt.objects.filter(pk__in=drawn[:n_eval]).update(split=Prompt.Split.EVAL)
        Prompt.objects.filter(pk__in=drawn[n_eval:]).update(split=Prompt.Split.DEV)
    return split_counts(project)
