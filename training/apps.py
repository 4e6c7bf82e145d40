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

        from .loop_settings import clean_base_model, json_schema
        from .models import ModelVersion, ProjectLoop
        from .services import on_judgment_recorded
        from .services.base_chain import check_field, clean_new_chain, write_new_chain
        from .services.project_settings import clean_lead_settings
        from .store import configure as configure_model_store

        configure_model_store()

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
                    'What the policy starts from: "demo", a model directory or .gguf file '
                    "under the server's model roots (PREFLOOP_MODEL_ROOTS), or a hub id it "
                    "allows (PREFLOOP_HUB_ALLOWLIST or its local hub cache). Fixed once the "
                    "project has trained versions, unless sent with new_chain: true."
                ),
                check=check_field,
            )
        )
        register_project_field(
            ProjectField(
                name="new_chain",
                read=lambda project: False,
                clean=clean_new_chain,
                write=write_new_chain,
                # not writeOnly: responses carry it (as false), and a schema must say so
                schema={"type": "boolean", "default": False},
                help_text=(
                    "With a new base_model on a project that has trained versions: start a "
                    "new chain, whose root (the new base) serves from now on and is the "
                    "reference of later rounds. Never stored; reads as false."
                ),
            )
        )
        register_project_field(
            ProjectField(
                name="loop_settings",
                read=lambda project: ProjectLoop.of(project).settings,
                clean=clean_lead_settings,
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
