"""The ``gate`` switch became ``gate_mode``: stored ``"gate": false`` becomes
``"gate_mode": "off"``, and ``"gate": true`` (the old default) is dropped, leaving the new
default "auto". Round snapshots are rewritten too, so that every stored setting validates."""

from django.db import migrations


def gate_to_gate_mode(apps, schema_editor):
    for model_name in ("ProjectLoop", "Round"):
        model = apps.get_model("training", model_name)
        for row in model.objects.filter(settings__has_key="gate").iterator():
            settings = {k: v for k, v in row.settings.items() if k != "gate"}
            if row.settings["gate"] is False and "gate_mode" not in settings:
                settings["gate_mode"] = "off"
            row.settings = settings
            row.save(update_fields=["settings"])


class Migration(migrations.Migration):

    dependencies = [
        ("training", "0005_drop_eval_holdout"),
    ]

    operations = [
        migrations.RunPython(gate_to_gate_mode, migrations.RunPython.noop),
    ]
