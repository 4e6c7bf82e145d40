"""python manage.py export_data <project> --format trl -o pairs.jsonl [--bundle zip|hf]"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotate.datasets.exporters import (
    BUNDLES,
    EXPORT_FORMATS,
    STREAMED,
    export_card,
    stream_export,
    write_export,
)
from annotate.datasets.labels import AGGREGATIONS, WEIGHTS, PairOptions
from annotate.errors import ServiceError

from .import_data import find_project


class Command(BaseCommand):
    help = "Export a project's preference pairs or judgments (streamed; '-o -' writes to stdout)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project id or slug")
        parser.add_argument("--format", required=True, choices=[*EXPORT_FORMATS, "card"])
        parser.add_argument(
            "-o", "--output", required=True, help="file, directory (--bundle hf) or -"
        )
        parser.add_argument("--bundle", default="file", choices=BUNDLES)
        parser.add_argument("--rounds", default="", help="comma-separated round numbers")
        parser.add_argument("--splits", default="", help="comma-separated: train, eval, dev")
        parser.add_argument(
            "--kinds",
            default="",
            help="comma-separated: train, eval, gold (default: train and gold; eval only when "
            "named)",
        )
        parser.add_argument(
            "--versions",
            default="",
            help="comma-separated version names (base, v1, ...): pairs with a completion "
            "sampled by one of them",
        )
        parser.add_argument("--include-ties", action="store_true")
        parser.add_argument("--include-both-bad", action="store_true")
        parser.add_argument("--aggregation", default="majority", choices=AGGREGATIONS)
        parser.add_argument("--min-agreement", type=float, default=0.0)
        parser.add_argument("--min-votes", type=int, default=1)
        parser.add_argument(
            "--weight", default="", choices=WEIGHTS, help="default: the project's count_weight"
        )
        rule = parser.add_argument_group("counting rule (default: the project's)")
        rule.add_argument(
            "--skip-paused",
            choices=["true", "false"],
            help="leave out paused annotators' judgments",
        )
        rule.add_argument(
            "--min-gold-accuracy",
            type=float,
            help="leave out annotators below this gold accuracy (0-1; 0 keeps everyone)",
        )
        rule.add_argument(
            "--skip-fast",
            choices=["true", "false"],
            help="leave out judgments under the project's fast_judgment_seconds",
        )
        parser.add_argument(
            "--label-smoothing",
            action="store_true",
            help="add each pair's label_smoothing column (the minority's vote share)",
        )
        parser.add_argument(
            "--card-format",
            default="trl",
            choices=EXPORT_FORMATS,
            help="with --format card: the export the card describes",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        project = find_project(opts["project"])
        try:
            options = PairOptions.from_dict(opts)
            self._export(project, opts, options)
        except ServiceError as exc:
            raise CommandError(exc.message) from None

    def _export(self, project: Any, opts: dict[str, Any], options: PairOptions) -> None:
        fmt, output, bundle = opts["format"], opts["output"], opts["bundle"]
        if fmt == "card":
            text = export_card(project, opts["card_format"], options)
            if output == "-":
                sys.stdout.write(text)
            else:
                Path(output).write_text(text, encoding="utf-8")
            return
        if output == "-":
            if bundle != "file" or fmt not in STREAMED:
                raise CommandError("Only JSONL and CSV exports without a bundle can go to stdout.")
            for chunk in stream_export(project, fmt, options):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        target = Path(output)
        if bundle == "hf" and target.exists() and not target.is_dir():
            raise CommandError(f"{target} exists and is not a directory.")
        stats = write_export(project, fmt, options, target, bundle=bundle)
        self.stderr.write(f"Wrote {stats.rows} rows to {target}.")
