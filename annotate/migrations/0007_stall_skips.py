from django.db import migrations, models


def count_earlier_skips(apps, schema_editor):
    # A pair skipped before skips were counted used to leave that annotator's queue for good;
    # count it as skipped once, so it comes back to them after the rest of their queue.
    Assignment = apps.get_model("annotate", "Assignment")
    Assignment.objects.filter(status="skipped").update(skips=1)


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0006_quality_gold"),
    ]

    operations = [
        migrations.AddField(
            model_name="assignment",
            name="skips",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.RunPython(count_earlier_skips, migrations.RunPython.noop),
    ]
