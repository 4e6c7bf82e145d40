from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    label = "training"
    verbose_name = "Training loop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from annotate.datasets.versions import register_version_lookup
        from annotate.extensions import ProjectField, judgment_recorded, register_project_field
        from annotate.models import Judgment

        from .loop_settings import clean_base_model, clean_loop_settings, json_schema
        from .models import ModelVersion, ProjectLoop
        from .services import on_judgment_recorded

        def write_base_model(project: Any, value: str) -> None:
            ProjectLoop.store(project, base_model=value)

        def write_settings(project: Any, value: dict[str, Any]) -> None:
            ProjectLoop.store(project, settings=value)

        register_project_field(
            ProjectField(
                name="base_model",
                read=lambda project: ProjectLoop.of(project).base_model,
                clean=clean_base_model,
                write=write_base_model,
                schema={"type": "string", "maxLength": 500},
                help_text=(
                    'What the policy starts from: "demo", a model directory, a .gguf file '
                    "or a hub id."
                ),
            )
        )
        register_project_field(
            ProjectField(
                name="loop_settings",
                read=lambda project: ProjectLoop.of(project).settings,
                clean=clean_loop_settings,
                write=write_settings,
                schema=json_schema(),
                help_text="Round settings of the online-DPO loop; keys left out take defaults.",
            )
        )
        register_version_lookup(
            lambda project_id: dict(
                ModelVersion.objects.filter(project_id=project_id).values_list("pk", "number")
            )
        )
        judgment_recorded.connect(
            on_judgment_recorded, sender=Judgment, dispatch_uid="training-judgment-recorded"
        )
