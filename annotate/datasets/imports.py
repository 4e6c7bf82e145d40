"""Writing imported rows: one transaction per file, in batches, duplicates skipped.

Every import goes through ``import_rows``: files and pasted text by ``import_file``, the
API's JSON lists by ``import_records``. Rows are validated and buffered a batch at a time,
then written with a handful of bulk inserts; nothing but the current batch (and the set of
prompts seen in this file) is held in memory. By default the first bad row raises, which
rolls the whole file back; ``on_error="skip"`` writes the good rows and lists the bad ones,
``validate`` lists every problem and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from django.conf import settings
from django.db import transaction

from annotate.errors import InvalidInput
from annotate.models import Comparison, Completion, Judgment, Project, Prompt, messages_hash
from annotate.selection import refresh_prompts

from .errors import RowError, TooLarge
from .formats import IMPORT_FORMATS, ImportOptions, Item
from .readers import UNITS, CountingReader, file_type, read_records, read_rows

BATCH = 500
# Bad rows listed one by one in a report; past this a file is more bad than good.
MAX_REPORTED = 10_000
Progress = Callable[[int], None]


@dataclass
class ImportReport:
    prompts_added: int = 0
    prompts_skipped: int = 0
    comparisons_added: int = 0
    judgments_added: int = 0
    rows: int = 0
    notes: list[str] = field(default_factory=list)
    # Rows accepted (written, or skipped as duplicates of prompts already there).
    imported: int = 0
    # Bad rows left out (on_error=skip) or found (validate): {"line": n, "error": reason}.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    validated: bool = False

    def as_dict(self) -> dict[str, int]:
        """The counts the prompt and pair endpoints have always answered with."""
        return {
            "rows": self.rows,
            "prompts_added": self.prompts_added,
            "prompts_skipped": self.prompts_skipped,
            "comparisons_added": self.comparisons_added,
        }

    def as_report(self) -> dict[str, Any]:
        if self.validated:
            return {
                "valid": not self.skipped,
                "rows": self.rows,
                "problems": self.skipped,
            }
        return {
            **self.as_dict(),
            "judgments_added": self.judgments_added,
            "imported": self.imported,
            "skipped": self.skipped,
        }

    def summary(self) -> str:
        parts = [f"{self.rows} rows read", f"{self.prompts_added} prompts added"]
        if self.prompts_skipped:
            parts.append(f"{self.prompts_skipped} duplicate prompts skipped")
        if self.comparisons_added:
            parts.append(f"{self.comparisons_added} pairs added")
        if self.judgments_added:
            parts.append(f"{self.judgments_added} imported judgments added")
        if self.skipped:
            shown = "; ".join(f"line {p['line']}: {p['error']}" for p in self.skipped[:5])
            more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            parts.append(f"{len(self.skipped)} bad rows skipped ({shown}{more})")
        return ", ".join(parts) + "."


class _BatchWriter:
    def __init__(self, project: Project, round_number: int | None, report: ImportReport) -> None:
        self.project = project
        self.round = round_number
        self.report = report
        self.items: list[Item] = []

    def add(self, item: Item) -> None:
        self.items.append(item)
        if len(self.items) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        hashes = [messages_hash(item.messages) for item in items]
        prompt_ids = dict(
            Prompt.objects.filter(project=self.project, content_hash__in=set(hashes)).values_list(
                "content_hash", "id"
            )
        )
        new_prompts: dict[str, Prompt] = {}
        for key, item in zip(hashes, items, strict=True):
            if key in prompt_ids or key in new_prompts:
                self.report.prompts_skipped += 1
                continue
            new_prompts[key] = Prompt(
                project=self.project,
                messages=item.messages,
                metadata=item.metadata,
                split=item.split,
                content_hash=key,
            )
        Prompt.objects.bulk_create(new_prompts.values())
        self.report.prompts_added += len(new_prompts)
        prompt_ids.update({key: p.pk for key, p in new_prompts.items()})

        paired = [
            (prompt_ids[key], item) for key, item in zip(hashes, items, strict=True) if item.pair
        ]
        if not paired:
            return
        completions = []
        for prompt_id, item in paired:
            assert item.pair is not None
            completions.append(Completion(prompt_id=prompt_id, text=item.pair[0]))
            completions.append(Completion(prompt_id=prompt_id, text=item.pair[1]))
        Completion.objects.bulk_create(completions)
        comparisons = [
            Comparison(
                project=self.project,
                prompt_id=prompt_id,
                completion_a=completions[2 * i],
                completion_b=completions[2 * i + 1],
                kind=item.kind,
                gold_choice=gold_answer(item.kind, [v.choice for v in item.votes]),
                round=self.round,
                judgment_count=len(item.votes),
            )
            for i, (prompt_id, item) in enumerate(paired)
        ]
        Comparison.objects.bulk_create(comparisons)
        self.report.comparisons_added += len(comparisons)
        judgments = [
            Judgment(
                comparison=comparison,
                project=self.project,
                annotator=None,
                source=Judgment.Source.IMPORTED,
                external_annotator=vote.external_annotator[:200],
                choice=vote.choice,
                strength=vote.strength,
                rationale=vote.rationale,
                duration_ms=vote.duration_ms,
                left_is_a=True,
            )
            for comparison, (_, item) in zip(comparisons, paired, strict=True)
            for vote in item.votes
        ]
        Judgment.objects.bulk_create(judgments)
        self.report.judgments_added += len(judgments)
        if judgments:
            refresh_prompts(prompt_id for prompt_id, item in paired if item.votes)


def import_rows(
    project: Project,
    format_name: str,
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    tabular: bool = False,
    unit: str = "line",
    options: ImportOptions | None = None,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Parse and write every row in one transaction.

    By default any bad row rolls it all back. With ``options.on_error == "skip"`` the good
    rows are written and each bad one is listed in ``report.skipped``; with
    ``options.validate`` every row is checked, every problem listed, and nothing written.
    Readers hand a bad line they could read past as its RowError in place of the row.
    """
    if format_name not in IMPORT_FORMATS:
        raise InvalidInput(f'"format" must be one of {", ".join(IMPORT_FORMATS)}')
    parse = IMPORT_FORMATS[format_name][0]
    options = options or ImportOptions()
    collect = options.on_error == "skip" or options.validate
    report = ImportReport(validated=options.validate)
    try:
        with transaction.atomic():
            writer = _BatchWriter(project, options.round, report)
            for number, row in rows:
                report.rows += 1
                try:
                    if isinstance(row, RowError):
                        raise row
                    item = _storable(number, parse(number, row, tabular, options))
                except RowError as exc:
                    if not collect:
                        raise
                    _note(report, number, exc.detail)
                    continue
                report.imported += 1
                if not options.validate:
                    writer.add(item)
                if on_progress is not None and report.rows % BATCH == 0:
                    on_progress(report.rows)
            writer.flush()
            if report.rows == 0:
                raise InvalidInput("The file holds no rows.")
    except RowError as exc:
        if options.validate:
            # A file that cannot be read on: the problems so far, and this one, last.
            _note(report, exc.line, exc.detail)
            return report
        if exc.unit == unit:
            raise
        raise RowError(exc.line, exc.detail, unit=unit) from None
    return report


def _note(report: ImportReport, number: int, error: str) -> None:
    if len(report.skipped) < MAX_REPORTED:
        report.skipped.append({"line": number, "error": error})
    elif len(report.skipped) == MAX_REPORTED:
        report.skipped.append({"line": number, "error": "and more bad rows; fix these first"})


def _storable(number: int, item: Item) -> Item:
    """The item, once its metadata is JSON a database stores (no NaN or Infinity, which
    Parquet floats and lenient JSON writers produce)."""
    try:
        json.dumps(item.metadata, allow_nan=False)
    except ValueError:
        detail = '"metadata" holds NaN or Infinity, which JSON does not allow'
        raise RowError(number, detail) from None
    except (TypeError, RecursionError):
        raise RowError(number, '"metadata" is not a JSON object') from None
    return item


def check_size(size: int | None) -> None:
    limit = settings.PREFLOOP_MAX_UPLOAD_BYTES
    if size is not None and size > limit:
        raise TooLarge(
            f"The file is {_megabytes(size)}, over the upload limit of {_megabytes(limit)} "
            "(PREFLOOP_MAX_UPLOAD_BYTES)."
        )


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def import_file(
    project: Project,
    format_name: str,
    stream: IO[bytes],
    filename: str,
    *,
    size: int | None = None,
    options: ImportOptions | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import an uploaded or local file; its type comes from its name's extension.

    ``on_progress`` is called with the number of bytes read so far.
    """
    if format_name not in IMPORT_FORMATS:
        raise InvalidInput(f'"format" must be one of {", ".join(IMPORT_FORMATS)}')
    check_size(size)
    kind = file_type(filename)
    allowed = IMPORT_FORMATS[format_name][1]
    if kind not in allowed:
        raise InvalidInput(
            f"A {format_name} import reads "
            f"{', '.join('.' + a for a in allowed)} files, not .{kind}."
        )
    options = options or ImportOptions()
    counted = CountingReader(stream)
    lenient = options.on_error == "skip" or options.validate
    rows: Iterable[tuple[int, dict[str, Any]]] = read_rows(
        counted,  # type: ignore[arg-type]
        kind,
        lenient=lenient,
    )
    if kind in ("csv", "tsv") and format_name == "prompts":
        rows = _require_column(rows, options.column)
    return import_rows(
        project,
        format_name,
        rows,
        tabular=kind in ("csv", "tsv"),
        unit=UNITS[kind],
        options=options,
        on_progress=(lambda _rows: on_progress(counted.bytes_read)) if on_progress else None,
    )


def import_records(project: Project, format_name: str, records: Any) -> ImportReport:
    """Import a JSON list already parsed (an API request's body); item i is reported as item i."""
    return import_rows(project, format_name, read_records(records), unit="item")


def _require_column(
    rows: Iterable[tuple[int, dict[str, Any]]], column: str
) -> Iterable[tuple[int, dict[str, Any]]]:
    """A prompt column that is not in the header is reported once, on line 1."""
    first = True
    for number, row in rows:
        if not isinstance(row, dict):
            yield number, row
            continue
        if first and column not in row and "messages" not in row:
            header = ", ".join(f'"{name}"' for name in row)
            raise RowError(1, f'there is no "{column}" column (the header has {header})')
        first = False
        yield number, row


def gold_answer(kind: str, choices: list[str]) -> str:
    """The right answer of an imported gold pair: its votes' choice when they all agree."""
    if kind != Comparison.Kind.GOLD or not choices or len(set(choices)) != 1:
        return ""
    return choices[0]
