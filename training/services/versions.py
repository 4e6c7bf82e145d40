"""A project's model versions: the base (v0), the serving one, promotion, where they live."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from annotate.errors import NotFound
from annotate.models import Project

from ..core.store import spec_of
from ..loop_settings import base_model_of
from ..models import ModelVersion, Round, TrainingRun
from ..store import model_store
from .active import queue_scoring


def models_dir(project: Project) -> Path:
    """This machine's directory of the project's versions: where training writes a version
    before publishing it, and where readers cache the versions they fetch from the store."""
    return Path(django_settings.VAR_DIR) / "models" / project.slug


def store_key(project: Project, number: int) -> str:
    """The key of version ``number`` of ``project`` in the model store."""
    return f"{project.slug}/v{number}"


def publish(project: Project, number: int, directory: Path) -> str:
    """Publish a trained version directory to the model store; returns its spec
    (``store:<key>``), what the version row records."""
    return model_store().publish(directory, store_key(project, number))


def discard_unrecorded(project: Project, number: int) -> None:
    """Remove from the store a version that was published but never recorded (its training
    run died in between), so that the retry publishes its own."""
    key = store_key(project, number)
    if not ModelVersion.objects.filter(project=project, spec=spec_of(key)).exists():
        model_store().remove(key)


def base_version(project: Project) -> ModelVersion:
    """The root of the project's current chain: v0, its base model, created (serving) on first
    use, or the newest root a lead started with ``new_chain`` (see ``base_chain``)."""
    version = (
        ModelVersion.objects.filter(project=project, parent__isnull=True)
        .order_by("-number")
        .first()
    )
    if version is not None:
        return version
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(
                project=project,
                number=0,
                spec=base_model_of(project),
                state=ModelVersion.State.SERVING,
                promoted_at=timezone.now(),
            )
    except IntegrityError:
        return ModelVersion.objects.get(project=project, number=0)


def current_base_version(project: Project) -> ModelVersion:
    """`base_version`, its spec first brought up to the project's ``base_model`` while no round
    has used it: until the first round the base may still change, and whatever samples or
    serves the base (a round starting, ``serve_model``) must see the new one."""
    base = base_version(project)
    spec = base_model_of(project)
    if (
        base.number == 0
        and base.spec != spec
        and not Round.objects.filter(project=project).exists()
    ):
        base.spec = spec
        base.save(update_fields=["spec"])
    return base


def serving_version(project: Project) -> ModelVersion:
    base = base_version(project)
    serving = ModelVersion.objects.filter(project=project, state=ModelVersion.State.SERVING).first()
    return serving or base


def next_version_number(project: Project) -> int:
    """One above every version recorded or promised to a training run of the project."""
    top_version = ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"]
    top_run = TrainingRun.objects.filter(round__project=project).aggregate(n=Max("version_number"))[
        "n"
    ]
    return max(top_version or 0, top_run or 0) + 1


@transaction.atomic
def promote(version: ModelVersion) -> bool:
    """Make ``version`` the project's serving version; False when it already is.

    Also the roll-back: promoting an older version retires the current one.
    """
    Project.objects.select_for_update().filter(pk=version.project_id).first()
    version.refresh_from_db()
    if version.state == ModelVersion.State.SERVING:
        return False
    ModelVersion.objects.filter(
        project_id=version.project_id, state=ModelVersion.State.SERVING
    ).update(state=ModelVersion.State.RETIRED)
    version.state = ModelVersion.State.SERVING
    version.promoted_at = timezone.now()
    version.save(update_fields=["state", "promoted_at"])
    queue_scoring(version.project)
    return True


def get_version(project: Project, version_id: int | str) -> ModelVersion:
    try:
        return ModelVersion.objects.get(project=project, pk=int(version_id))
    except (ModelVersion.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such version.") from None
