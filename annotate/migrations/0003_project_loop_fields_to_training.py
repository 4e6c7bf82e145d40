"""The loop's base model and settings now live with the training app (training.ProjectLoop).

The training app's data migration copies them first (it declares ``run_before`` this one).
"""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("annotate", "0002_datasetjob"),
    ]

    operations = [
        migrations.RemoveField(model_name="project", name="base_model"),
        migrations.RemoveField(model_name="project", name="loop_settings"),
    ]
