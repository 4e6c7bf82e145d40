from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.errors import ServiceError
from annotate.models import Project
from training import services
from training.services.simulation import RULE_SYNTAX


def find_project(value: str) -> Project:
    project = Project.objects.filter(slug=value).first()
    if project is None and value.isdigit():
        project = Project.objects.filter(pk=int(value)).first()
    if project is None:
        raise CommandError(f"No project with id or slug {value!r}.")
    return project


class Command(BaseCommand):
    help = (
        "Judge a project's open comparisons as simulated annotators following a rule: "
        f"{RULE_SYNTAX}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or slug")
        parser.add_argument("--rule", required=True)
        parser.add_argument("--annotators", type=int, default=3)
        parser.add_argument("--noise", type=float, default=0.1, help="chance of a random verdict")
        parser.add_argument(
            "--round", type=int, default=None, help="only this round (default: the open round)"
        )
        parser.add_argument(
            "--all", action="store_true", help="judge every open comparison, of any round"
        )
        parser.add_argument("--limit", type=int, default=None, help="stop after this many")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        project = find_project(options["project"])
        try:
            services.resolve_rule(options["rule"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        round_number = options["round"]
        if round_number is None and not options["all"]:
            current = services.current_round(project)
            if current is None or not current.is_open:
                raise CommandError("No open round: pass --round N or --all.")
            round_number = current.number
        try:
            report = services.simulate_annotators(
                project,
                options["rule"],
                annotators=options["annotators"],
                noise=options["noise"],
                round_number=round_number,
                seed=options["seed"],
                limit=options["limit"],
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        for name, count in sorted(report.by_annotator.items()):
            self.stdout.write(f"  {name}: {count}")
        self.stdout.write(
            f"{report.judged} judgments by {options['annotators']} simulated annotators."
        )
