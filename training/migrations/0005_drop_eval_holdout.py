"""``eval_holdout`` is gone: a project's eval and dev prompts are drawn once by
``training.services.splits.ensure_splits``. Stored settings lose the key so they validate."""

from django.db import migrations


def drop_key(apps, schema_editor):
    for model_name in ("ProjectLoop", "Round"):
        model = apps.get_model("training", model_name)
        for row in model.objects.filter(settings__has_key="eval_holdout").iterator():
            row.settings = {k: v for k, v in row.settings.items() if k != "eval_holdout"}
            row.save(update_fields=["settings"])


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0004_round_stats"),
    ]

    operations = [
        migrations.RunPython(drop_key, migrations.RunPython.noop),
    ]
