"""The project's gold pairs indexed in their random order, so that the queue draws one without
sorting the whole gold set (annotate.queue._gold_candidate); replaces ``pairs_by_kind``, whose
(project, kind) it starts with. Built without locking the table on PostgreSQL
(annotate.migration_operations), hence not atomic."""

from django.db import migrations, models

from annotate.migration_operations import AddIndexWithoutLocking, RemoveIndexWithoutLocking


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("annotate", "0013_queue_indexes"),
    ]

    operations = [
        AddIndexWithoutLocking(
            model_name="comparison",
            index=models.Index(
                fields=["project", "kind", "random_key"], name="pairs_by_kind_key"
            ),
        ),
        RemoveIndexWithoutLocking(model_name="comparison", name="pairs_by_kind"),
    ]
