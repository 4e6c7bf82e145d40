"""Rounds of the online-DPO loop: start, generate, collect, train, gate, promote.

Each write owns its transaction and checks the row's state under a lock first, so a Celery task
delivered twice (acks_late, a worker killed mid-task) does its work once: a round gets one set of
comparisons, trains at most one version and promotes at most once. The core's torch modules
(generation, trainer) are imported inside the functions that need them, so that importing this
module never loads torch.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum, Value
from django.db.models.functions import Least
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput, NotFound
from annotate.models import Comparison, Completion, Judgment, Project, Prompt

from ..core.config import DPOConfig
from ..core.loading import load_model
from ..core.pairing import make_pairs
from ..loop_settings import LoopSettings, base_model_of, loop_settings
from ..models import ModelVersion, Round, TrainingRun
from . import dispatch
from .training_data import round_pairs

log = logging.getLogger(__name__)

# Seconds between progress writes to the database while generating or training.
_PROGRESS_INTERVAL = 0.5


def dpo_config_dict(ls: LoopSettings) -> dict[str, Any]:
    """The full DPOConfig of a round: core defaults with the project's overrides."""
    return DPOConfig.from_dict(dict(ls.dpo)).to_dict()


def models_dir(project: Project) -> Path:
    return Path(django_settings.VAR_DIR) / "models" / project.slug


# --- Versions ------------------------------------------------------------------------------


def base_version(project: Project) -> ModelVersion:
    """v0, the project's base model, created (serving) on first use."""
    version = ModelVersion.objects.filter(project=project, number=0).first()
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


def serving_version(project: Project) -> ModelVersion:
    base = base_version(project)
    serving = ModelVersion.objects.filter(project=project, state=ModelVersion.State.SERVING).first()
    return serving or base


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
    return True


# --- Starting a round and sampling ---------------------------------------------------------


def _draw(ids: list[int], used: Counter[int], n: int, rng: random.Random) -> list[int]:
    """``n`` ids, least used first: no repeats until every id has been used as often."""
    keyed = sorted(ids, key=lambda i: (used[i], rng.random()))
    return sorted(keyed[:n])


def _ensure_eval_prompts(project: Project, ls: LoopSettings) -> None:
    """Set aside eval prompts before the first round when the project has none."""
    prompts = Prompt.objects.filter(project=project)
    if ls.eval_holdout <= 0 or prompts.filter(split=Prompt.Split.EVAL).exists():
        return
    ids = list(prompts.values_list("pk", flat=True))
    n = math.floor(len(ids) * ls.eval_holdout)
    if n < 1 or len(ids) - n < 1:
        return
    chosen = random.Random(f"{project.pk}-eval").sample(ids, n)
    Prompt.objects.filter(pk__in=chosen).update(split=Prompt.Split.EVAL)


def start_round(project: Project) -> Round:
    """Open the project's next round with its serving version; sampling runs in a task.

    Raises:
        Conflict: a round is still open.
        InvalidInput: the project has no train prompts.
    """
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        open_round = Round.objects.filter(project=project, state__in=Round.OPEN_STATES).first()
        if open_round is not None:
            raise Conflict(f"Round {open_round.number} is still {open_round.get_state_display()}.")
        ls = loop_settings(project)
        base = base_version(project)
        rounds = Round.objects.filter(project=project)
        if not rounds.exists() and base.spec != base_model_of(project):
            # the base may change until the first round uses it
            base.spec = base_model_of(project)
            base.save(update_fields=["spec"])
        policy = serving_version(project)
        number = (rounds.aggregate(n=Max("number"))["n"] or 0) + 1
        _ensure_eval_prompts(project, ls)
        rng = random.Random(f"{project.pk}-{number}-{ls.seed}")
        used: Counter[int] = Counter()
        for ids in rounds.values_list("prompt_ids", flat=True):
            used.update(ids)
        train_ids = list(
            Prompt.objects.filter(project=project, split=Prompt.Split.TRAIN).values_list(
                "pk", flat=True
            )
        )
        if not train_ids:
            raise InvalidInput("The project has no train prompts: import prompts first.")
        prompt_ids = _draw(train_ids, used, ls.prompts_per_round, rng)
        eval_ids: list[int] = []
        if policy.number > 0 and ls.eval_share > 0:
            n_train = len(prompt_ids) * ls.pairs_per_prompt
            n_eval = math.ceil(n_train * ls.eval_share / (1 - ls.eval_share))
            pool = list(
                Prompt.objects.filter(project=project, split=Prompt.Split.EVAL).values_list(
                    "pk", flat=True
                )
            )
            eval_ids = sorted(rng.sample(pool, min(n_eval, len(pool))))
        loop_round = Round.objects.create(
            project=project,
            number=number,
            policy=policy,
            settings=ls.to_dict(),
            prompt_ids=prompt_ids,
            eval_prompt_ids=eval_ids,
            progress_total=len(prompt_ids) + len(eval_ids),
        )
        dispatch.enqueue(dispatch.GENERATE_ROUND, loop_round.pk)
    return loop_round


def _throttled(write: Callable[..., None]) -> Callable[..., None]:
    last = [0.0]

    def call(*args: Any, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last[0] >= _PROGRESS_INTERVAL:
            last[0] = now
            write(*args)

    return call


def _sample(
    model: Any,
    prompts: list[Prompt],
    k: int,
    ls: LoopSettings,
    seed: int,
    on_prompt_done: Callable[[int], None],
) -> list[list[Any]]:
    # imported here to keep torch (loaded by the generation module) out of the web process
    from ..core.generation import generate

    per_call = max(1, ls.generation_batch_size // k)
    out: list[list[Any]] = []
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start : start + per_call]
        out.extend(
            generate(
                model,
                [p.messages for p in chunk],
                k=k,
                temperature=ls.temperature,
                top_p=ls.top_p,
                max_new_tokens=ls.max_new_tokens,
                seed=seed + start,
                batch_size=ls.generation_batch_size,
            )
        )
        on_prompt_done(len(chunk))
    return out


def _params(ls: LoopSettings, version: ModelVersion, seed: int) -> dict[str, Any]:
    return {
        "version": version.label,
        "temperature": ls.temperature,
        "top_p": ls.top_p,
        "max_new_tokens": ls.max_new_tokens,
        "seed": seed,
    }


def generate_round(round_id: int, progress: Callable[[int, int], None] | None = None) -> str:
    """Sample the round's completions and make its comparisons; once per round.

    Sampling happens outside any transaction; the rows are written in one transaction that
    first checks, under the round's row lock, that no other delivery wrote them already.
    """
    loop_round = Round.objects.select_related("project", "policy").get(pk=round_id)
    if loop_round.state != Round.State.GENERATING:
        return f"skipped: round is {loop_round.state}"
    ls = LoopSettings.from_dict(loop_round.settings)
    project, policy = loop_round.project, loop_round.policy
    prompts = list(Prompt.objects.filter(pk__in=loop_round.prompt_ids).order_by("pk"))
    eval_prompts = list(Prompt.objects.filter(pk__in=loop_round.eval_prompt_ids).order_by("pk"))
    total = len(prompts) + len(eval_prompts)
    done = [0]

    def write_progress() -> None:
        Round.objects.filter(pk=round_id).update(progress_done=done[0], progress_total=total)
        if progress is not None:
            progress(done[0], total)

    report = _throttled(write_progress)

    def advance(n: int) -> None:
        done[0] += n
        report()

    seed = ls.seed + 1000 * loop_round.number
    try:
        loaded = load_model(policy.spec)
        samples = _sample(loaded, prompts, ls.k, ls, seed, advance)
        eval_sides: list[tuple[Prompt, Any, ModelVersion, Any]] = []
        if eval_prompts:
            mine = _sample(loaded, eval_prompts, 1, ls, seed + 500, lambda n: None)
            opponents = [v for v in (policy.parent, base_version(project)) if v is not None]
            opponents = [v for i, v in enumerate(opponents) if v not in opponents[:i]]
            del loaded
            for j, opponent in enumerate(opponents):
                assigned = [i for i in range(len(eval_prompts)) if i % len(opponents) == j]
                theirs = _sample(
                    load_model(opponent.spec),
                    [eval_prompts[i] for i in assigned],
                    1,
                    ls,
                    seed + 500,
                    advance,
                )
                for i, sample in zip(assigned, theirs, strict=True):
                    eval_sides.append((eval_prompts[i], mine[i][0], opponent, sample[0]))
        report(force=True)
    except Exception as exc:
        _fail_round(round_id, Round.State.GENERATING, exc)
        raise

    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=round_id)
        if locked.state != Round.State.GENERATING:
            return f"skipped: round is {locked.state}"
        params = _params(ls, policy, seed)
        made = 0
        for prompt, group in zip(prompts, samples, strict=True):
            rows = [
                Completion.objects.create(
                    prompt=prompt,
                    text=s.text,
                    source=Completion.Source.MODEL,
                    model_version_id=policy.pk,
                    generation_params=params,
                    token_count=s.token_count,
                    logprob=s.logprob,
                )
                for s in group
            ]
            for a, b in make_pairs(group, max_pairs=ls.pairs_per_prompt, seed=seed + prompt.pk):
                Comparison.objects.create(
                    project=project,
                    prompt=prompt,
                    completion_a=rows[a],
                    completion_b=rows[b],
                    round=loop_round.number,
                    kind=Comparison.Kind.TRAIN,
                )
                made += 1
        for prompt, mine_sample, opponent, their_sample in eval_sides:
            sides = [
                Completion.objects.create(
                    prompt=prompt,
                    text=sample.text,
                    source=Completion.Source.MODEL,
                    model_version_id=version.pk,
                    generation_params=_params(ls, version, seed + 500),
                    token_count=sample.token_count,
                    logprob=sample.logprob,
                )
                for version, sample in ((policy, mine_sample), (opponent, their_sample))
            ]
            Comparison.objects.create(
                project=project,
                prompt=prompt,
                completion_a=sides[0],
                completion_b=sides[1],
                round=loop_round.number,
                kind=Comparison.Kind.EVAL,
            )
            made += 1
        locked.state = Round.State.COLLECTING
        locked.error = ""
        locked.progress_done = 0
        locked.progress_total = made * project.overlap
        locked.save(
            update_fields=["state", "error", "progress_done", "progress_total", "updated_at"]
        )
    return f"{made} comparisons"


def _fail_round(round_id: int, expected: str, exc: BaseException) -> None:
    with transaction.atomic():
        Round.objects.filter(pk=round_id, state=expected).update(
            state=Round.State.FAILED, error=_describe(exc), updated_at=timezone.now()
        )


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[:4000]


# --- Collecting and the trigger ------------------------------------------------------------


def round_comparisons(loop_round: Round) -> Any:
    return Comparison.objects.filter(project_id=loop_round.project_id, round=loop_round.number)


def collecting_progress(loop_round: Round) -> tuple[int, int]:
    """(judgments counted toward the overlap, judgments the round needs)."""
    overlap = loop_round.project.overlap
    comparisons = round_comparisons(loop_round)
    done = comparisons.aggregate(n=Sum(Least("judgment_count", Value(overlap))))["n"] or 0
    return int(done), comparisons.count() * overlap


def trigger_fired(loop_round: Round) -> bool:
    ls = LoopSettings.from_dict(loop_round.settings)
    if ls.trigger == "manual":
        return False
    comparisons = round_comparisons(loop_round)
    if not comparisons.exists():
        return False
    all_judged = not comparisons.filter(judgment_count__lt=loop_round.project.overlap).exists()
    if ls.trigger == "all_judged" or all_judged:
        return all_judged
    judged = comparisons.filter(kind=Comparison.Kind.TRAIN, judgment_count__gte=1).count()
    return judged >= ls.min_pairs


def check_trigger(round_id: int) -> bool:
    """Start training when the round's trigger has fired; True when it did."""
    loop_round = Round.objects.select_related("project").filter(pk=round_id).first()
    if loop_round is None or loop_round.state != Round.State.COLLECTING:
        return False
    done, total = collecting_progress(loop_round)
    Round.objects.filter(pk=round_id).update(progress_done=done, progress_total=total)
    if not trigger_fired(loop_round):
        return False
    try:
        begin_training(loop_round)
    except InvalidInput as exc:
        Round.objects.filter(pk=round_id).update(error=exc.message)
        return False
    except Conflict:
        return False
    return True


def check_triggers() -> int:
    """For the beat: check every collecting round; returns how many started training."""
    ids = Round.objects.filter(state=Round.State.COLLECTING).values_list("pk", flat=True)
    return sum(check_trigger(round_id) for round_id in list(ids))


def on_judgment_saved(sender: Any, instance: Judgment, created: bool, **kwargs: Any) -> None:
    """After a judgment commits, see whether its round's trigger fired."""
    if not created:
        return
    comparison_id = instance.comparison_id

    def check() -> None:
        row = Comparison.objects.filter(pk=comparison_id).values_list("round", "project_id").first()
        if row is None or row[0] is None:
            return
        round_number: int = row[0]
        project_id = row[1]
        round_id = (
            Round.objects.filter(
                project_id=project_id, number=round_number, state=Round.State.COLLECTING
            )
            .values_list("pk", flat=True)
            .first()
        )
        if round_id is not None:
            check_trigger(round_id)

    dispatch.on_commit(check)


# --- Training ------------------------------------------------------------------------------


def _next_version_number(project: Project) -> int:
    top_version = ModelVersion.objects.filter(project=project).aggregate(n=Max("number"))["n"]
    top_run = TrainingRun.objects.filter(round__project=project).aggregate(n=Max("version_number"))[
        "n"
    ]
    return max(top_version or 0, top_run or 0) + 1


def begin_training(loop_round: Round) -> TrainingRun:
    """Close collection and queue the training run (a lead's click or the trigger).

    Raises:
        Conflict: the round is not collecting judgments.
        InvalidInput: no comparison of the round has a majority yet.
    """
    with transaction.atomic():
        locked = Round.objects.select_for_update().select_related("project").get(pk=loop_round.pk)
        if locked.state != Round.State.COLLECTING:
            raise Conflict(f"Round {locked.number} is {locked.get_state_display().lower()}.")
        ls = LoopSettings.from_dict(locked.settings)
        pairs, _ = round_pairs(locked, ls)
        if not pairs:
            raise InvalidInput(
                f"Round {locked.number} has no judged pair with a majority yet: nothing to train."
            )
        run = _open_training_run(
            locked,
            ls,
            attempt=1,
            version_number=_next_version_number(locked.project),
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
    locked.save(update_fields=["state", "error", "updated_at"])
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
            _mark_run_failed(run, "The worker running this attempt was lost.")
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
                _mark_run_failed(run, "The worker running this attempt was lost.")
                failed += 1
    return failed


def _clear_leftovers(out_dir: Path) -> None:
    """Remove what a killed attempt may have left at the version's path.

    A complete directory without a ModelVersion row is an attempt that died between writing
    and recording; the retry trains again rather than trusting it.
    """
    for tmp in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    if out_dir.exists() and not ModelVersion.objects.filter(spec=str(out_dir)).exists():
        shutil.rmtree(out_dir)


TrainProgress = Callable[[int, int, float, float | None], None]


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
        if run.state in (TrainingRun.State.SUCCEEDED, TrainingRun.State.FAILED):
            return f"skipped: run is {run.state}"
        if run.state == TrainingRun.State.RUNNING and not run.is_lost():
            return "skipped: another worker is running it"
        if run.round.state != Round.State.TRAINING:
            return f"skipped: round is {run.round.state}"
        run.claim()
    loop_round = run.round
    project = loop_round.project
    ls = LoopSettings.from_dict(loop_round.settings)
    out_dir = models_dir(project) / f"v{run.version_number}"
    losses: list[float] = []

    def write_progress(step: int, total: int, loss: float, eta: float | None) -> None:
        TrainingRun.objects.filter(pk=run_id).update(
            step=step,
            total_steps=total,
            loss=loss,
            eta_s=eta,
            losses=list(losses),
            heartbeat_at=timezone.now(),
        )

    report = _throttled(write_progress)

    def on_step(step: int, total: int, loss: float, eta: float | None) -> None:
        losses.append(loss)
        report(step, total, loss, eta, force=step == total)
        if progress is not None:
            progress(step, total, loss, eta)

    try:
        # imported here to keep torch (loaded by the trainer) out of the web process
        from ..core.trainer import train_dpo

        pairs, _ = round_pairs(loop_round, ls)
        if not pairs:
            raise InvalidInput("No judged pair with a majority: nothing to train.")
        config = DPOConfig.from_dict(run.config)
        _clear_leftovers(out_dir)
        reference = base_version(project).spec if config.reference == "base" else None
        result = train_dpo(
            [p.to_preference_pair() for p in pairs],
            loop_round.policy.spec,
            out_dir,
            config,
            progress=on_step,
            reference_spec=reference,
        )
    except BaseException as exc:
        with transaction.atomic():
            locked = TrainingRun.objects.select_for_update().get(pk=run_id)
            if locked.state == TrainingRun.State.RUNNING:
                _mark_run_failed(locked, "".join(traceback.format_exception(exc))[-4000:])
        raise

    metrics = result.to_dict()
    with transaction.atomic():
        locked_round = Round.objects.select_for_update().get(pk=loop_round.pk)
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        existing = ModelVersion.objects.filter(trained_in=locked_round).first()
        if existing is not None or run.state != TrainingRun.State.RUNNING:
            return "skipped: the round already has its version"
        version = ModelVersion.objects.create(
            project=project,
            number=run.version_number,
            spec=str(out_dir),
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
    evaluate_round(loop_round.pk)
    return f"trained {version}"


# --- Evaluation and promotion --------------------------------------------------------------


def _noise_margin(p_before: float, p_after: float, n: int) -> float:
    """1.96 standard errors of the difference of two accuracies measured on ``n`` pairs.

    A round's held-out split is small (a tenth of a few dozen pairs), so a drop of a pair
    or two is noise, not a regression; with many held-out pairs the margin shrinks to 0.
    """
    if n <= 0:
        return 0.0
    variance = (p_before * (1 - p_before) + p_after * (1 - p_after)) / n
    return 1.96 * math.sqrt(variance)


def gate_check(version: ModelVersion, ls: LoopSettings) -> dict[str, Any]:
    """Compare the new version with its parent on the round's held-out pairs."""
    before = version.heldout("before")
    after = version.heldout("after")
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    if not before or not after:
        return {"passed": True, "reasons": ["no held-out pairs: the gate had nothing to check"]}
    acc_before, acc_after = before["reward_accuracy"], after["reward_accuracy"]
    allowed = ls.gate_accuracy_tolerance + _noise_margin(
        acc_before, acc_after, int(version.metrics.get("num_heldout_pairs") or 0)
    )
    checks["reward_accuracy"] = {"before": acc_before, "after": acc_after, "allowed_drop": allowed}
    if acc_after < acc_before - allowed:
        reasons.append(
            f"held-out reward accuracy fell from {acc_before:.2f} to {acc_after:.2f} "
            f"(more than the {allowed:.2f} that sampling noise and the tolerance allow)"
        )
    lp_before, lp_after = before["chosen_logp"], after["chosen_logp"]
    checks["chosen_logp"] = {"before": lp_before, "after": lp_after}
    floor = lp_before - ls.gate_max_chosen_logp_drop * abs(lp_before)
    if lp_after < floor:
        reasons.append(
            f"held-out chosen log-prob collapsed from {lp_before:.1f} to {lp_after:.1f} "
            f"(limit {floor:.1f})"
        )
    return {"passed": not reasons, "reasons": reasons, "checks": checks}


def evaluate_round(round_id: int) -> str:
    """Gate the round's new version; promote it or keep it for inspection. Once per round."""
    with transaction.atomic():
        loop_round = Round.objects.select_for_update().select_related("project").get(pk=round_id)
        if loop_round.state != Round.State.EVALUATING:
            return f"skipped: round is {loop_round.state}"
        version = ModelVersion.objects.get(trained_in=loop_round)
        ls = LoopSettings.from_dict(loop_round.settings)
        gate = gate_check(version, ls)
        if not ls.gate:
            gate["passed"] = True
            gate["reasons"] = ["gate turned off", *gate.get("reasons", [])]
        version.gate = gate
        version.save(update_fields=["gate"])
        if gate["passed"]:
            promote(version)
            loop_round.state = Round.State.PROMOTED
            loop_round.error = ""
        else:
            version.state = ModelVersion.State.REJECTED
            version.save(update_fields=["state"])
            loop_round.state = Round.State.REJECTED
            loop_round.error = "; ".join(gate["reasons"])
        loop_round.finished_at = timezone.now()
        loop_round.save(update_fields=["state", "error", "finished_at", "updated_at"])
        if gate["passed"] and ls.auto_next_round:
            project_id = loop_round.project_id
            dispatch.on_commit(lambda: _start_next_round(project_id))
    return loop_round.state


def _start_next_round(project_id: int) -> None:
    project = Project.objects.get(pk=project_id)
    try:
        start_round(project)
    except (Conflict, InvalidInput) as exc:
        log.info("next round of %s not started: %s", project.slug, exc)


# --- Lookups for views ---------------------------------------------------------------------


def get_round(project: Project, round_id: int | str) -> Round:
    try:
        return Round.objects.select_related("policy").get(project=project, pk=int(round_id))
    except (Round.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such round.") from None


def get_version(project: Project, version_id: int | str) -> ModelVersion:
    try:
        return ModelVersion.objects.get(project=project, pk=int(version_id))
    except (ModelVersion.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such version.") from None


def current_round(project: Project) -> Round | None:
    return (
        Round.objects.filter(project=project).select_related("policy").order_by("-number").first()
    )
