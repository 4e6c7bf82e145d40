"""The queue's indexes (annotate.queue): one per pair selection strategy, from (project,
repeat_for, judgment count) on in the queue's order, one for a round's progress and trigger,
one for the project's gold pairs. They
replace 0012's queue indexes, which led with the project alone. Built without locking the table
on PostgreSQL (annotate.migration_operations), hence not atomic."""

import django.db.models.functions.math
from django.db import migrations, models

import annotate.models
from annotate.migration_operations import AddIndexWithoutLocking, RemoveIndexWithoutLocking


def queue_index(name, *key, nulls_last=False):
    """As ``annotate.models.queue_index``; with ``nulls_last`` the PostgreSQL form."""

    def desc(expression):
        return models.OrderBy(expression, descending=True, nulls_last=nulls_last or None)

    return models.Index(
        models.F("project"),
        models.F("repeat_for"),
        models.F("judgment_count"),
        desc(models.F("round")),
        *(desc(k) for k in key),
        models.F("random_key"),
        models.F("id"),
        name=name,
    )


STRATEGY_KEYS = {
    "queue_open_random": (),
    "queue_open_uncertainty": (
        annotate.models.Negated(django.db.models.functions.math.Abs("policy_margin")),
    ),
    "queue_open_disagreement": (models.F("prompt_disagreement"),),
    "queue_open_coverage": (annotate.models.Negated(models.F("prompt_judged_pairs")),),
}


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("annotate", "0012_pair_selection"),
    ]

    operations = [
        *(
            RemoveIndexWithoutLocking(model_name="comparison", name=name)
            for name in ("queue_random", "queue_uncertainty", "queue_disagreement", "queue_coverage")
        ),
        *(
            AddIndexWithoutLocking(
                model_name="comparison",
                index=queue_index(name, *key),
                postgres_index=queue_index(name, *key, nulls_last=True),
            )
            for name, key in STRATEGY_KEYS.items()
        ),
        AddIndexWithoutLocking(
            model_name="comparison",
            index=models.Index(
                fields=["project", "round", "kind", "judgment_count"], name="round_pairs"
            ),
        ),
        AddIndexWithoutLocking(
            model_name="comparison",
            index=models.Index(fields=["project", "kind"], name="pairs_by_kind"),
        ),
    ]
