"""Copy each project's base model and loop settings from the annotation app's project row.

Runs before annotate drops those columns (``run_before``), so the annotation app's migrations
never depend on training. Reversible: going back copies the values onto the project row again
(annotate's reverse migration has re-added the columns by then). Idempotent: a project that
already has a loop row is updated, not duplicated.
"""

from django.db import migrations


def copy_to_loop(apps, schema_editor):
    Project = apps.get_model("annotate", "Project")
    ProjectLoop = apps.get_model("training", "ProjectLoop")
    for project in Project.objects.all().only("pk", "base_model", "loop_settings").iterator():
        ProjectLoop.objects.update_or_create(
            project_id=project.pk,
            defaults={
                "base_model": project.base_model,
                "settings": project.loop_settings or {},
            },
        )


def copy_back(apps, schema_editor):
    Project = apps.get_model("annotate", "Project")
    ProjectLoop = apps.get_model("training", "ProjectLoop")
    for loop in ProjectLoop.objects.all().iterator():
        Project.objects.filter(pk=loop.project_id).update(
            base_model=loop.base_model, loop_settings=loop.settings
        )


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0002_projectloop"),
    ]
    run_before = [
        ("annotate", "0003_project_loop_fields_to_training"),
    ]

    operations = [
        migrations.RunPython(copy_to_loop, copy_back),
    ]
