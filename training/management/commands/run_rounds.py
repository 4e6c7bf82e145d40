from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.errors import Conflict, ServiceError
from annotate.models import Project
from training import services
from training.core.stats import WinRate
from training.loop_settings import LoopSettings
from training.models import ModelVersion, Round, TrainingRun
from training.services.evaluation import SampleCache, eval_prompts, rule_win_rate_over
from training.services.offline import annotator_seed, run_offline, seed_project
from training.services.simulation import rule_scores

from .simulate_annotators import find_project


@dataclass
class RoundRow:
    number: int
    version: str
    state: str
    pairs: int
    train_s: float
    heldout_accuracy: float | None
    win_rate: WinRate | None

    HEADER = (
        f"{'round':>5}  {'version':>7}  {'state':>9}  {'pairs':>5}  {'train s':>7}  "
        f"{'held-out acc':>12}  {'rule win vs base [95% CI], prompts':>34}"
    )

    def line(self) -> str:
        acc = "-" if self.heldout_accuracy is None else f"{self.heldout_accuracy:.2f}"
        w = self.win_rate
        win = "-" if w is None else f"{w.rate:.2f} [{w.low:.2f}, {w.high:.2f}], n={w.prompts}"
        return (
            f"{self.number:>5}  {self.version:>7}  {self.state:>9}  {self.pairs:>5}  "
            f"{self.train_s:>7.1f}  {acc:>12}  {win:>34}"
        )


class Command(BaseCommand):
    help = (
        "Run whole rounds of the loop unattended with simulated annotators, and print a table "
        "per round. By default every step runs in this process (no worker needed); "
        "--via-worker goes through the Celery queues."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or slug")
        parser.add_argument("--rounds", type=int, default=1)
        parser.add_argument("--simulate", required=True, metavar="RULE")
        parser.add_argument("--annotators", type=int, default=3)
        parser.add_argument("--noise", type=float, default=0.1)
        parser.add_argument("--via-worker", action="store_true")
        parser.add_argument(
            "--eval-prompts", type=int, default=16, help="eval prompts for the rule's win rate"
        )
        parser.add_argument(
            "--timeout", type=float, default=6 * 3600, help="seconds to wait for a worker round"
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed of everything the run draws: stored as the project's loop and training "
            "seed, and the simulated annotators' noise seed",
        )
        parser.add_argument(
            "--offline",
            action="store_true",
            help="instead of new online rounds: the judgments of the project's first N rounds "
            "spent on samples of the base, trained in one run with their optimizer steps",
        )
        parser.add_argument(
            "--same-epochs",
            action="store_true",
            help="with --offline: match the online rounds' epochs instead of their steps",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = find_project(options["project"])
        try:
            rule = services.resolve_rule(options["simulate"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        if options["via_worker"] and services.loop_settings(project).pairing == "best_vs_worst":
            raise CommandError(
                "pairing best_vs_worst scores the samples with the simulated rule while "
                "sampling, which the worker cannot do: run without --via-worker"
            )
        # the rule also scores each prompt's samples when the project pairs best vs worst
        self.scorer = functools.partial(rule_scores, rule)
        self.cache = SampleCache()
        self.rows: list[RoundRow] = []
        if options["same_epochs"] and not options["offline"]:
            raise CommandError("--same-epochs goes with --offline")
        if options["offline"] and options["via_worker"]:
            raise CommandError("--offline runs in this process: leave out --via-worker")
        if options["seed"] is not None:
            try:
                seed_project(project, options["seed"])
            except ServiceError as exc:
                raise CommandError(exc.message) from None
            self.stdout.write(f"Seed {options['seed']}: the project's loop and training seed.")
        if options["offline"]:
            self._offline(project, options)
            return
        self.stdout.write(RoundRow.HEADER)
        for _ in range(options["rounds"]):
            if options["via_worker"]:
                loop_round = self._round_via_worker(project, options)
            else:
                loop_round = self._round_in_process(project, options)
            row = self._row(project, loop_round, options)
            self.rows.append(row)
            self.stdout.write(row.line())
            self.stdout.flush()
            if loop_round.state != Round.State.PROMOTED:
                self.stdout.write(f"Round {loop_round.number} was not promoted: {loop_round.error}")
                break

    def _simulate(self, project: Project, loop_round: Round, options: dict[str, Any]) -> None:
        services.simulate_annotators(
            project,
            options["simulate"],
            annotators=options["annotators"],
            noise=options["noise"],
            round_number=loop_round.number,
            seed=annotator_seed(options["seed"], loop_round.number),
        )

    def _offline(self, project: Project, options: dict[str, Any]) -> None:
        try:
            result = run_offline(
                project,
                options["rounds"],
                options["simulate"],
                annotators=options["annotators"],
                noise=options["noise"],
                seed=options["seed"],
                same_epochs=options["same_epochs"],
                scorer=self.scorer,
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(RoundRow.HEADER)
        self.stdout.write(self._row(project, result.round, options).line())
        self.stdout.write(result.summary())

    def _round_in_process(self, project: Project, options: dict[str, Any]) -> Round:
        try:
            with services.in_process():
                loop_round = services.start_round(project)
                services.use_gate_judge(loop_round, options["simulate"])
                services.generate_round(loop_round.pk, scorer=self.scorer)
                self._simulate(project, loop_round, options)
                run = services.begin_training(Round.objects.get(pk=loop_round.pk))
                services.train_round(run.pk)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        return Round.objects.select_related("policy").get(pk=loop_round.pk)

    def _round_via_worker(self, project: Project, options: dict[str, Any]) -> Round:
        current = services.current_round(project)
        if current is not None and current.is_open:
            loop_round = current
        else:
            try:
                loop_round = services.start_round(project)
            except ServiceError as exc:
                raise CommandError(exc.message) from None
        services.use_gate_judge(loop_round, options["simulate"])
        deadline = time.monotonic() + options["timeout"]
        simulated = False
        while time.monotonic() < deadline:
            loop_round.refresh_from_db()
            if loop_round.state == Round.State.FAILED:
                raise CommandError(f"Round {loop_round.number} failed: {loop_round.error}")
            if loop_round.is_finished:
                return loop_round
            if loop_round.state == Round.State.COLLECTING and not simulated:
                self._simulate(project, loop_round, options)
                simulated = True
                if not services.check_trigger(loop_round.pk):
                    try:
                        services.begin_training(loop_round)
                    except Conflict:
                        pass
                    except ServiceError as exc:
                        raise CommandError(exc.message) from None
            time.sleep(1.0)
        raise CommandError(
            f"Round {loop_round.number} did not finish in {options['timeout']:.0f} s."
        )

    def _row(self, project: Project, loop_round: Round, options: dict[str, Any]) -> RoundRow:
        version = ModelVersion.objects.filter(trained_in=loop_round).first()
        run = TrainingRun.objects.filter(
            round=loop_round, state=TrainingRun.State.SUCCEEDED
        ).first()
        win = None
        prompts = eval_prompts(project, options["eval_prompts"])
        if version is not None and prompts:
            ls = LoopSettings.from_dict(loop_round.settings)
            win = rule_win_rate_over(
                version,
                services.base_version(project),
                options["simulate"],
                prompts,
                ls,
                self.cache,
            )
        heldout = version.heldout("after") if version else {}
        return RoundRow(
            number=loop_round.number,
            version=version.label if version else "-",
            state=loop_round.state,
            pairs=run.num_pairs if run else 0,
            train_s=float((run.metrics or {}).get("total_seconds", 0.0)) if run else 0.0,
            heldout_accuracy=heldout.get("reward_accuracy"),
            win_rate=win,
        )
