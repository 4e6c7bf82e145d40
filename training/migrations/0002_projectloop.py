import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("annotate", "0002_datasetjob"),
        ("training", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProjectLoop",
            fields=[
                (
                    "project",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="loop",
                        serialize=False,
                        to="annotate.project",
                    ),
                ),
                ("base_model", models.CharField(blank=True, default="demo", max_length=500)),
                ("settings", models.JSONField(blank=True, default=dict)),
            ],
        ),
    ]
