from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "annotate"
    verbose_name = "Annotation"

    def ready(self) -> None:
        from .extensions import judgment_recorded
        from .quality import repeats
        from .quality.gold import on_judgment

        judgment_recorded.connect(on_judgment, dispatch_uid="annotate.quality.gold")
        judgment_recorded.connect(repeats.on_judgment, dispatch_uid="annotate.quality.repeats")
