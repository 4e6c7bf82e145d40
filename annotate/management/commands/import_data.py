"""python manage.py import_data <project> <file> --format trl [--kind gold] [--round 3]
[--on-error skip] [--validate]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.datasets.formats import IMPORT_FORMATS, ImportOptions
from annotate.datasets.imports import import_file
from annotate.errors import ServiceError
from annotate.models import Comparison, Project, Prompt


def find_project(ref: str) -> Project:
    """A project by id or slug."""
    project = Project.objects.filter(slug=ref).first()
    if project is None and ref.isdigit():
        project = Project.objects.filter(pk=int(ref)).first()
    if project is None:
        raise CommandError(f'No project with id or slug "{ref}".')
    return project


class Command(BaseCommand):
    help = "Import prompts, pairs or labeled preference data into a project (one transaction)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or slug")
        parser.add_argument("file", help="a .jsonl, .json, .csv, .tsv, .txt or .parquet file")
        parser.add_argument("--format", required=True, choices=list(IMPORT_FORMATS))
        parser.add_argument(
            "--column", default="prompt", help="the prompt column of a prompts file"
        )
        parser.add_argument(
            "--kind", choices=Comparison.PAIR_KINDS, help="comparison kind for pairs"
        )
        parser.add_argument("--round", type=int, help="the round the pairs belong to")
        parser.add_argument("--split", choices=Prompt.Split.values, help="split for new prompts")
        parser.add_argument(
            "--on-error",
            choices=["stop", "skip"],
            default="stop",
            help="stop: a bad row imports nothing (default); skip: import the good rows and "
            "list the bad ones",
        )
        parser.add_argument(
            "--validate",
            action="store_true",
            help="list every problem in the file and write nothing",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        project = find_project(opts["project"])
        path = Path(opts["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            options = ImportOptions.from_dict(
                {
                    "column": opts["column"],
                    "kind": opts["kind"],
                    "round": opts["round"],
                    "split": opts["split"],
                    "on_error": opts["on_error"],
                    "validate": opts["validate"],
                }
            )
            with path.open("rb") as fh:
                report = import_file(
                    project,
                    opts["format"],
                    fh,
                    path.name,
                    size=path.stat().st_size,
                    options=options,
                )
        except ServiceError as exc:
            raise CommandError(f"Nothing was imported: {exc.message}") from None
        if options.validate:
            for problem in report.skipped:
                self.stdout.write(f"{path.name}: line {problem['line']}: {problem['error']}")
            if report.skipped:
                raise CommandError(f"{len(report.skipped)} problems found; nothing was written.")
            self.stdout.write(f"{path.name}: {report.rows} rows, no problems; nothing was written.")
            return
        for problem in report.skipped:
            self.stderr.write(f"skipped line {problem['line']}: {problem['error']}")
        self.stdout.write(f"Imported into {project.name}: {report.summary()}")
