"""Offline DPO at an online run's budget, and seeding a project's run.

The online loop (``run_rounds``) samples round r from the version round r-1 promoted, so each
round's judgments are about the policy as it is now. The offline counterpart spends the same
judgments on samples drawn from the base all at once and trains one DPO run from the base
against the base reference: what is left of the online run's gain at the same budget is what
closing the loop buys (Guo et al. 2024, "Direct language model alignment from online AI
feedback", compare online and offline DPO this way).

The offline run is measured against the project's first N rounds, which must have trained:
their judgments and optimizer steps are counted, not predicted, so both match exactly.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max

from annotate.errors import Conflict, InvalidInput
from annotate.models import Comparison, Judgment, Project, Prompt

from ..core.config import DPOConfig
from ..loop_settings import LoopSettings, clean_loop_settings
from ..models import ModelVersion, ProjectLoop, Round, TrainingRun
from . import dispatch
from .generation import PromptScorer, generate_round
from .simulation import Rule, simulate_annotators
from .splits import ensure_splits
from .training_data import round_pairs
from .training_runs import begin_training, train_round
from .versions import base_version


def annotator_seed(seed: int | None, round_number: int) -> int:
    """The simulated annotators' noise seed of a round: the round number when no seed is set,
    so that runs without ``--seed`` judge as before."""
    return (seed or 0) * 1000 + round_number


def seed_project(project: Project, seed: int) -> None:
    """Make ``seed`` the project's loop seed and training seed (stored in its loop settings).

    Rounds take a snapshot of the project's settings when they start, so every later round
    draws its prompts, samples and training shuffles from this seed (with the round number
    added where rounds must differ), whether it runs in this process or in a worker.
    """
    if seed < 0:
        raise InvalidInput(f"seed: must not be negative, got {seed}")
    with transaction.atomic():
        settings = seeded_settings(ProjectLoop.of(project).settings or {}, seed)
        ProjectLoop.store(project, settings=clean_loop_settings(settings))


def seeded_settings(settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """``settings`` with ``seed`` as their loop seed and training seed."""
    return {**settings, "seed": seed, "dpo": {**dict(settings.get("dpo") or {}), "seed": seed}}


@dataclass
class OnlineBudget:
    """What the project's first N rounds spent: the offline run spends the same."""

    rounds: list[Round]
    prompt_ids: list[int]  # the rounds' prompt draws, in order (a prompt may repeat)
    comparisons: int  # train comparisons
    judgments: int  # judgments of those comparisons
    steps: int  # optimizer steps of the rounds' training runs, summed
    settings: LoopSettings  # the first round's settings (the offline run uses them)


def online_budget(project: Project, rounds: int) -> OnlineBudget:
    """The judgments and optimizer steps of the project's rounds 1..``rounds``.

    Raises:
        InvalidInput: fewer than ``rounds`` rounds have trained a version.
    """
    if rounds < 1:
        raise InvalidInput("rounds: must be at least 1")
    found = list(
        Round.objects.filter(project=project, number__lte=rounds).order_by("number")[:rounds]
    )
    runs = {
        run.round_id: run
        for run in TrainingRun.objects.filter(
            round__in=found, state=TrainingRun.State.SUCCEEDED
        ).order_by("attempt")
    }
    trained = [r for r in found if r.pk in runs]
    if len(trained) < rounds:
        raise InvalidInput(
            f"--offline is measured against the project's first {rounds} online round(s), and "
            f"{len(trained)} of them trained a version: run "
            f"`run_rounds {project.slug} --rounds {rounds} --simulate <rule>` first."
        )
    numbers = [r.number for r in trained]
    train = Comparison.objects.filter(
        project=project, round__in=numbers, kind=Comparison.Kind.TRAIN
    )
    return OnlineBudget(
        rounds=trained,
        prompt_ids=[pk for r in trained for pk in r.prompt_ids],
        comparisons=train.count(),
        judgments=Judgment.objects.filter(comparison__in=train).count(),
        steps=sum(runs[r.pk].step for r in trained),
        settings=LoopSettings.from_dict(trained[0].settings),
    )


def offline_prompt_ids(project: Project, budget: OnlineBudget, seed: int) -> list[int]:
    """As many prompts as the online rounds drew: their own prompts, each once, then (where the
    online rounds drew a prompt more than once) other train prompts in a seeded order, as far
    as the train split goes."""
    wanted = len(budget.prompt_ids)
    chosen = list(dict.fromkeys(budget.prompt_ids))
    others = sorted(
        set(
            Prompt.objects.filter(project=project, split=Prompt.Split.TRAIN).values_list(
                "pk", flat=True
            )
        )
        - set(chosen)
    )
    random.Random(f"offline-{project.pk}-{seed}").shuffle(others)
    return sorted(chosen + others[: max(0, wanted - len(chosen))])


def step_matched_dpo(
    online: DPOConfig, train_pairs: int, steps: int, *, same_epochs: bool
) -> dict[str, Any]:
    """The offline run's epochs and step cap (DPOConfig fields).

    Same steps: ``max_steps`` is the online total and the epochs are the fewest that reach
    it, ``ceil(steps * grad_accum / ceil(train_pairs / batch))``, so the run does exactly
    ``steps`` optimizer steps under one learning-rate schedule. Same epochs: the online
    rounds' epochs and no cap.
    """
    if same_epochs:
        return {"epochs": online.epochs, "max_steps": online.max_steps}
    micro_per_epoch = math.ceil(max(1, train_pairs) / online.batch_size)
    epochs = max(1, math.ceil(steps * online.grad_accum_steps / micro_per_epoch))
    return {"epochs": epochs, "max_steps": steps}


def train_pair_count(pairs: list[Any], config: DPOConfig) -> int:
    """How many of ``pairs`` the trainer trains on after taking its held-out share."""
    # imported here to keep torch (loaded by the data module) out of the web process
    from ..core.data import split_heldout

    train, _ = split_heldout(
        [p.to_preference_pair() for p in pairs], config.heldout_fraction, config.seed
    )
    return len(train)


@dataclass
class OfflineResult:
    """The offline run next to the online budget it matches."""

    round: Round
    version: ModelVersion | None
    judgments: int
    online_judgments: int
    comparisons: int
    pairs: int
    steps: int
    online_steps: int
    epochs: int
    same_epochs: bool
    seconds: float

    def summary(self) -> str:
        label = self.version.label if self.version else "-"
        state = self.version.state if self.version else self.round.state
        match = "epochs" if self.same_epochs else "steps"
        return (
            f"offline: round {self.round.number} -> {label} ({state}) from the base, "
            f"{self.judgments} judgments (online {self.online_judgments}), "
            f"{self.comparisons} comparisons, {self.pairs} pairs, {self.epochs} epoch(s), "
            f"{self.steps} optimizer steps (online {self.online_steps}; same {match}), "
            f"{self.seconds:.0f} s"
        )


def _open_offline_round(project: Project, budget: OnlineBudget, seed: int | None) -> Round:
    """A round whose policy is the base, on the online rounds' prompts, without replay or
    eval comparisons; sampling is left to the caller."""
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        open_round = Round.objects.filter(project=project, state__in=Round.OPEN_STATES).first()
        if open_round is not None:
            raise Conflict(f"Round {open_round.number} is still {open_round.get_state_display()}.")
        ensure_splits(project)
        ls = LoopSettings.from_dict(budget.settings.to_dict())
        if seed is not None:
            ls.seed = seed
            ls.dpo = {**ls.dpo, "seed": seed}
        # one run on this round's data alone, from the base: nothing to replay, nothing to
        # measure against on eval prompts, no next round to start
        ls.replay_share = 0.0
        ls.eval_share = 0.0
        ls.auto_next_round = False
        number = (Round.objects.filter(project=project).aggregate(n=Max("number"))["n"] or 0) + 1
        prompt_ids = offline_prompt_ids(project, budget, ls.seed)
        # a train split smaller than the online draws: each prompt gives proportionally more
        # samples and pairs, as the online rounds that drew it more than once did
        repeats = math.ceil(len(budget.prompt_ids) / max(1, len(prompt_ids)))
        ls.k *= repeats
        ls.pairs_per_prompt *= repeats
        return Round.objects.create(
            project=project,
            number=number,
            policy=base_version(project),
            settings=ls.to_dict(),
            prompt_ids=prompt_ids,
            eval_prompt_ids=[],
            progress_total=len(prompt_ids),
        )


def run_offline(
    project: Project,
    rounds: int,
    rule: Rule | str,
    *,
    annotators: int = 3,
    noise: float = 0.1,
    seed: int | None = None,
    same_epochs: bool = False,
    scorer: PromptScorer | None = None,
) -> OfflineResult:
    """Offline DPO at the budget of the project's first ``rounds`` rounds, in this process.

    One new round samples the online rounds' prompts from the base, simulated annotators judge
    its comparisons until they have given as many judgments as the online rounds' train
    comparisons got, and one DPO run trains a version from the base against the base reference
    with the online runs' total optimizer steps (``same_epochs``: their epochs). The version is
    gated like any other.

    Raises:
        InvalidInput: fewer than ``rounds`` trained rounds, or nothing to train.
        Conflict: a round is still open.
    """
    started = time.perf_counter()
    budget = online_budget(project, rounds)
    with dispatch.in_process():
        loop_round = _open_offline_round(project, budget, seed)
        generate_round(loop_round.pk, scorer=scorer)
        simulate_annotators(
            project,
            rule,
            annotators=annotators,
            noise=noise,
            round_number=loop_round.number,
            seed=annotator_seed(seed, loop_round.number),
            limit=budget.judgments,
        )
        loop_round.refresh_from_db()
        ls = LoopSettings.from_dict(loop_round.settings)
        pairs, _ = round_pairs(loop_round, ls)
        config = DPOConfig.from_dict(dict(ls.dpo))
        matched = step_matched_dpo(
            config, train_pair_count(pairs, config), budget.steps, same_epochs=same_epochs
        )
        ls.dpo = {**ls.dpo, **matched}
        loop_round.settings = ls.to_dict()
        loop_round.save(update_fields=["settings", "updated_at"])
        run = begin_training(loop_round)
        train_round(run.pk)
    loop_round.refresh_from_db()
    run.refresh_from_db()
    train = Comparison.objects.filter(
        project=project, round=loop_round.number, kind=Comparison.Kind.TRAIN
    )
    return OfflineResult(
        round=loop_round,
        version=ModelVersion.objects.filter(trained_in=loop_round).first(),
        judgments=Judgment.objects.filter(comparison__in=train).count(),
        online_judgments=budget.judgments,
        comparisons=train.count(),
        pairs=run.num_pairs,
        steps=run.step,
        online_steps=budget.steps,
        epochs=int(matched["epochs"]),
        same_epochs=same_epochs,
        seconds=time.perf_counter() - started,
    )
