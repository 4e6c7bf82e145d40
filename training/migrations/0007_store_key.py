"""Trained versions are named by their key in the model store, ``store:<project-slug>/v<N>``,
instead of the absolute path of their directory under ``$PREFLOOP_VAR_DIR/models`` (the default
store, so nothing moves). Backwards, keys become paths under this machine's VAR_DIR again."""

from pathlib import PurePath

from django.conf import settings
from django.db import migrations

PREFIX = "store:"


def paths_to_keys(apps, schema_editor):
    ModelVersion = apps.get_model("training", "ModelVersion")
    for version in ModelVersion.objects.select_related("project").iterator():
        path = PurePath(version.spec)
        if not path.is_absolute() or len(path.parts) < 3:
            continue
        models, slug, name = path.parts[-3:]
        if models == "models" and slug == version.project.slug and name == f"v{version.number}":
            version.spec = f"{PREFIX}{slug}/{name}"
            version.save(update_fields=["spec"])


def keys_to_paths(apps, schema_editor):
    ModelVersion = apps.get_model("training", "ModelVersion")
    models_dir = PurePath(settings.VAR_DIR) / "models"
    for version in ModelVersion.objects.filter(spec__startswith=PREFIX).iterator():
        version.spec = str(models_dir / version.spec[len(PREFIX) :])
        version.save(update_fields=["spec"])


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0006_gate_mode_from_gate"),
    ]

    operations = [
        migrations.RunPython(paths_to_keys, keys_to_paths),
    ]
