from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.apps import AppConfig
from django.db.models import Field


class TrainingConfig(AppConfig):
    name = "training"
    label = "training"
    verbose_name = "Training loop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from annotate.models import Judgment, Project

        from .loop_settings import validate_base_model, validate_loop_settings
        from .services import on_judgment_saved

        # The annotation app stores these two fields without knowing their schema; the
        # validators make the API's PATCH and model forms reject bad values with a field error.
        validators: list[tuple[str, Callable[[Any], Any]]] = [
            ("loop_settings", validate_loop_settings),
            ("base_model", validate_base_model),
        ]
        for name, validator in validators:
            field = Project._meta.get_field(name)
            assert isinstance(field, Field)
            if validator not in field.validators:
                field.validators.append(validator)
        post_save.connect(
            on_judgment_saved, sender=Judgment, dispatch_uid="training-judgment-saved"
        )
