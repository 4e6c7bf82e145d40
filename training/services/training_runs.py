"""Training a round: open an attempt, run it in the worker, record the version, retry.

An attempt (a TrainingRun) is claimed under its row lock, so a second delivery of the task does
not train twice; an attempt whose worker died is failed by the beat (``fail_lost_runs``) or by
a retry, which trains the same version number again as a new attempt.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput

from ..core.config import DPOConfig
from ..core.store import spec_of
from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round, TrainingRun
from . import dispatch
from .gate import evaluate_round, roll_back_if_worse
from .parallel_training import train_on_processes
from .progress import throttled
from .round_stats import judgment_stats
from .training_data import round_pairs
from .versions import base_version, discard_unrecorded, models_dir, next_version_number, publish

if TYPE_CHECKING:
    from ..core.trainer import TrainResult

log = logging.getLogger(__name__)

LOST_WORKER = "The worker running this attempt was lost."


def dpo_config_dict(ls: LoopSettings) -> dict[str, Any]:
    """The full DPOConfig of a round: core defaults with the project's overrides."""
    return DPOConfig.from_dict(dict(ls.dpo)).to_dict()


# --- Opening an attempt --------------------------------------------------------------------


def begin_training(loop_round: Round) -> TrainingRun:
    """Close collection and queue the training run (a lead's click or the trigger).

    Raises:
        Conflict: the round is not collecting judgments, or it just ended because people
            found its policy worse than the parent and ``auto_rollback`` restored the parent.
        InvalidInput: no comparison of the round has a majority yet.
    """
    rolled_back = roll_back_if_worse(loop_round)
    if rolled_back is not None:
        raise Conflict(rolled_back)
    with transaction.atomic():
        locked = Round.objects.select_for_update().select_related("project").get(pk=loop_round.pk)
        if locked.state != Round.State.COLLECTING:
            raise Conflict(f"Round {locked.number} is {locked.get_state_display().lower()}.")
        ls = LoopSettings.from_dict(locked.settings)
        pairs, replayed = round_pairs(locked, ls)
        if len(pairs) == replayed:  # replayed pairs alone would train a version on old news
            raise InvalidInput(
                f"Round {locked.number} has no judged pair with a majority yet: nothing to train."
            )
        run = _open_training_run(
            locked,
            ls,
            attempt=1,
            version_number=next_version_number(locked.project),
            num_pairs=len(pairs),
        )
    return run


def _open_training_run(
    locked: Round,
    ls: LoopSettings,
    *,
    attempt: int,
    version_number: int,
    num_pairs: int,
) -> TrainingRun:
    """Record a training attempt, move the (locked) round to training, queue the task."""
    run = TrainingRun.objects.create(
        round=locked,
        attempt=attempt,
        version_number=version_number,
        config=dpo_config_dict(ls),
        num_pairs=num_pairs,
    )
    locked.state = Round.State.TRAINING
    locked.error = ""
    locked.stats = {**locked.stats, **judgment_stats(locked)}
    locked.save(update_fields=["state", "error", "stats", "updated_at"])
    dispatch.enqueue(dispatch.TRAIN_ROUND, run.pk)
    return run


def retry(loop_round: Round) -> Round:
    """Run a failed round's failed step again (sampling, or training as a new attempt).

    A training run whose worker died (killed, lost) counts as failed here.
    """
    with transaction.atomic():
        locked = Round.objects.select_for_update().select_related("project").get(pk=loop_round.pk)
        run = locked.latest_run()
        if run is not None and run.is_lost():
            _mark_run_failed(run, LOST_WORKER)
            locked.refresh_from_db()
        if locked.state != Round.State.FAILED:
            raise Conflict(f"Round {locked.number} has not failed.")
        if run is None:
            locked.state = Round.State.GENERATING
            locked.error = ""
            locked.progress_done = 0
            locked.save(update_fields=["state", "error", "progress_done", "updated_at"])
            dispatch.enqueue(dispatch.GENERATE_ROUND, locked.pk)
            return locked
        ls = LoopSettings.from_dict(locked.settings)
        pairs, _ = round_pairs(locked, ls)
        _open_training_run(
            locked,
            ls,
            attempt=run.attempt + 1,
            version_number=run.version_number,
            num_pairs=len(pairs),
        )
    return locked


def _mark_run_failed(run: TrainingRun, error: str) -> None:
    """Fail the attempt and its round (the caller holds a transaction)."""
    run.state = TrainingRun.State.FAILED
    run.error = error
    run.finished_at = timezone.now()
    run.save(update_fields=["state", "error", "finished_at"])
    Round.objects.filter(pk=run.round_id, state=Round.State.TRAINING).update(
        state=Round.State.FAILED, error=error.splitlines()[-1][:500], updated_at=timezone.now()
    )


def fail_lost_runs() -> int:
    """For the beat: mark running attempts whose worker is gone as failed."""
    failed = 0
    for run_id in TrainingRun.objects.filter(state=TrainingRun.State.RUNNING).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update().get(pk=run_id)
            if run.is_lost():
                _mark_run_failed(run, LOST_WORKER)
                failed += 1
    return failed


# --- Running an attempt --------------------------------------------------------------------


def _clear_leftovers(out_dir: Path) -> None:
    """Remove what a killed attempt may have left at the version's path.

    A complete directory without a ModelVersion row is an attempt that died between writing
    and recording; the retry trains again rather than trusting it.
    """
    for tmp in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    recorded_as = [str(out_dir), spec_of(f"{out_dir.parent.name}/{out_dir.name}")]
    if out_dir.exists() and not ModelVersion.objects.filter(spec__in=recorded_as).exists():
        shutil.rmtree(out_dir)


def _discard_attempt(run: TrainingRun, out_dir: Path) -> None:
    """Remove what a failed attempt wrote and did not record, best effort: the version
    directory, its temporary directories, and its copy in the model store."""
    try:
        discard_unrecorded(run.round.project, run.version_number)
        _clear_leftovers(out_dir)
    except Exception:
        log.exception("could not remove what %s left behind", run)


TrainProgress = Callable[[int, int, float, float | None], None]


def _skip_reason(run: TrainingRun) -> str | None:
    """Why this delivery of the run must not train it, or None to claim it."""
    if run.state in (TrainingRun.State.SUCCEEDED, TrainingRun.State.FAILED):
        return f"skipped: run is {run.state}"
    if run.state == TrainingRun.State.RUNNING and not run.is_lost():
        return "skipped: another worker is running it"
    if run.round.state != Round.State.TRAINING:
        return f"skipped: round is {run.round.state}"
    return None


def _step_reporter(run_id: int, progress: TrainProgress | None) -> TrainProgress:
    """A trainer callback that writes the run's steps and losses (throttled) and tells the task."""
    losses: list[float] = []

    def write(step: int, total: int, loss: float, eta: float | None) -> None:
        TrainingRun.objects.filter(pk=run_id).update(
            step=step,
            total_steps=total,
            loss=loss,
            eta_s=eta,
            losses=list(losses),
            heartbeat_at=timezone.now(),
        )

    report = throttled(write)

    def on_step(step: int, total: int, loss: float, eta: float | None) -> None:
        losses.append(loss)
        report(step, total, loss, eta, force=step == total)
        if progress is not None:
            progress(step, total, loss, eta)

    return on_step


def _train(
    run: TrainingRun, ls: LoopSettings, out_dir: Path, on_step: TrainProgress
) -> TrainResult:
    """Train the run's version from the round's pairs into ``out_dir``.

    With ``dpo.num_processes`` above 1 the round trains on that many processes of this worker
    (see `parallel_training`); otherwise in this process.
    """
    # imported here to keep torch (loaded by the trainer) out of the web process
    from ..core.trainer import train_dpo

    loop_round = run.round
    pairs, _ = round_pairs(loop_round, ls)
    if not pairs:
        raise InvalidInput("No judged pair with a majority: nothing to train.")
    config = DPOConfig.from_dict(run.config)
    discard_unrecorded(loop_round.project, run.version_number)
    _clear_leftovers(out_dir)
    reference = base_version(loop_round.project).spec if config.reference == "base" else None
    if config.num_processes > 1:
        return train_on_processes(
            [p.to_preference_pair() for p in pairs],
            loop_round.policy.spec,
            out_dir,
            config,
            on_step=on_step,
            reference_spec=reference,
        )
    return train_dpo(
        [p.to_preference_pair() for p in pairs],
        loop_round.policy.spec,
        out_dir,
        config,
        progress=on_step,
        reference_spec=reference,
    )


def _record_version(
    run_id: int, loop_round: Round, spec: str, result: TrainResult
) -> ModelVersion | None:
    """Record the trained version and the run's success; None when it was recorded already."""
    metrics = result.to_dict()
    with transaction.atomic():
        locked_round = Round.objects.select_for_update().get(pk=loop_round.pk)
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        existing = ModelVersion.objects.filter(trained_in=locked_round).first()
        if existing is not None or run.state != TrainingRun.State.RUNNING:
            return None
        version = ModelVersion.objects.create(
            project=loop_round.project,
            number=run.version_number,
            spec=spec,
            parent=loop_round.policy,
            trained_in=locked_round,
            metrics={k: v for k, v in metrics.items() if k != "history"},
        )
        run.state = TrainingRun.State.SUCCEEDED
        run.metrics = metrics
        run.losses = [h["loss"] for h in metrics.get("history", [])]
        run.step = result.steps
        run.total_steps = max(run.total_steps, result.steps)
        run.finished_at = timezone.now()
        run.save()
        locked_round.state = Round.State.EVALUATING
        locked_round.save(update_fields=["state", "updated_at"])
    return version


def train_round(run_id: int, *, progress: TrainProgress | None = None) -> str:
    """Train the round's new version, record it, gate it and maybe promote it.

    The run is claimed under its row lock: a second delivery of the same run finds it running
    (or finished) and returns, unless the process that claimed it is gone.
    """
    with transaction.atomic():
        run = (
            TrainingRun.objects.select_for_update()
            .select_related("round__project", "round__policy")
            .get(pk=run_id)
        )
        skip = _skip_reason(run)
        gate_owed = run.state == TrainingRun.State.SUCCEEDED and (
            run.round.state == Round.State.EVALUATING
        )
        if skip is not None and not gate_owed:
            return skip
        if skip is None:
            run.claim()
    if gate_owed:
        # the delivery that trained the version died while gating it: gate it now (once)
        evaluate_round(run.round.pk)
        return f"gated {run.round}"
    ls = LoopSettings.from_dict(run.round.settings)
    out_dir = models_dir(run.round.project) / f"v{run.version_number}"
    try:
        result = _train(run, ls, out_dir, _step_reporter(run_id, progress))
        spec = publish(run.round.project, run.version_number, out_dir)
    except BaseException as exc:
        with transaction.atomic():
            locked = TrainingRun.objects.select_for_update().get(pk=run_id)
            owned = locked.state == TrainingRun.State.RUNNING
            if owned:
                _mark_run_failed(locked, "".join(traceback.format_exception(exc))[-4000:])
        if owned:
            # nothing of a failed attempt stays behind (a full disk, a store that refused a
            # file); a run failed by others meanwhile may have a retry writing there now
            _discard_attempt(run, out_dir)
        raise
    version = _record_version(run_id, run.round, spec, result)
    if version is None:
        return "skipped: the round already has its version"
    evaluate_round(run.round.pk)
    return f"trained {version}"
