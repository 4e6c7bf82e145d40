from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.errors import ServiceError
from training.core.data import DataError, read_prompts
from training.core.loading import ModelLoadError
from training.services.evaluation import eval_cache_dir, evaluate_versions

from .simulate_annotators import find_project


class Command(BaseCommand):
    help = (
        "Measure a project's versions with a rule judge on its eval prompts: win rate over the "
        "base and over the parent with prompt-clustered 95% intervals, length-controlled win "
        "rate, KL to the base, mean length and truncated share. Samples are kept under the var "
        "directory, so running it again only samples what is new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or slug")
        parser.add_argument(
            "--judge",
            required=True,
            metavar="RULE",
            help="shorter, longer, no-lists, contains:<word>, ... or a dotted path to a callable",
        )
        parser.add_argument(
            "--versions",
            default=None,
            help="comma-separated labels, e.g. base,v1,v3 (default: every version)",
        )
        parser.add_argument(
            "--samples", type=int, default=4, help="completions per prompt and version"
        )
        parser.add_argument(
            "--prompts",
            default=None,
            metavar="FILE",
            help="a prompts JSONL to use instead of the project's eval split",
        )
        parser.add_argument("--json", default=None, metavar="FILE", help="write the report here")
        parser.add_argument(
            "--seed", type=int, default=0, help="sampling and bootstrap seed (default 0)"
        )
        parser.add_argument(
            "--no-cache", action="store_true", help="sample everything again, keep nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = find_project(options["project"])
        labels = None
        if options["versions"]:
            labels = [x for x in options["versions"].split(",") if x.strip()]
        prompts = None
        if options["prompts"]:
            try:
                prompts = read_prompts(options["prompts"])
            except (DataError, OSError) as exc:
                raise CommandError(str(exc)) from None
        try:
            report = evaluate_versions(
                project,
                options["judge"],
                versions=labels,
                samples=options["samples"],
                prompts=prompts,
                seed=options["seed"],
                cache_dir=None if options["no_cache"] else eval_cache_dir(project),
                log=lambda line: self.stderr.write(line),
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        except ModelLoadError as exc:
            raise CommandError(f"cannot load a version's model: {exc}") from None
        self.stdout.write(report.table())
        if options["json"]:
            path = Path(options["json"])
            path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
            self.stderr.write(f"wrote {path}")
