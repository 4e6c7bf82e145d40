"""Importing prompts and ready-made pairs into a project.

Every import is one transaction: rows are validated and written as they
stream past, and the first bad row rolls the whole file back with a message
naming its line and field. Duplicate prompts (same messages) are skipped and
counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from django.db import transaction

from .errors import InvalidInput
from .models import Comparison, Completion, Project, Prompt, messages_hash

ROLES = ("system", "user", "assistant")
BATCH = 500


class RowError(InvalidInput):
    """A bad row: the message starts with its line number."""

    def __init__(self, line: int, message: str, unit: str = "line") -> None:
        super().__init__(f"{unit} {line}: {message}")
        self.line = line


@dataclass
class ImportReport:
    prompts_added: int = 0
    prompts_skipped: int = 0
    comparisons_added: int = 0
    rows: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "prompts_added": self.prompts_added,
            "prompts_skipped": self.prompts_skipped,
            "comparisons_added": self.comparisons_added,
        }

    def summary(self) -> str:
        parts = [f"{self.rows} rows read", f"{self.prompts_added} prompts added"]
        if self.prompts_skipped:
            parts.append(f"{self.prompts_skipped} duplicate prompts skipped")
        if self.comparisons_added:
            parts.append(f"{self.comparisons_added} pairs added")
        return ", ".join(parts) + "."


# --- Reading ----------------------------------------------------------------------


def iter_jsonl(stream: Iterable[bytes | str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a JSONL stream."""
    for number, raw in enumerate(stream, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise RowError(number, "the file is not UTF-8 text") from None
        else:
            text = raw
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RowError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise RowError(number, "each line must be a JSON object")
        yield number, obj


def parse_messages(line: int, row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat of a row: ``messages`` (a list of turns) or ``prompt`` (one user turn)."""
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise RowError(line, '"messages" must be a non-empty list')
        clean = []
        for i, msg in enumerate(messages):
            where = f'"messages"[{i}]'
            if not isinstance(msg, dict):
                raise RowError(line, f"{where} must be an object with role and content")
            role, content = msg.get("role"), msg.get("content")
            if role not in ROLES:
                raise RowError(line, f'{where}."role" must be one of {", ".join(ROLES)}')
            if not isinstance(content, str):
                raise RowError(line, f'{where}."content" must be a string')
            clean.append({"role": role, "content": content})
        return clean
    if "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise RowError(line, '"prompt" must be a non-empty string')
        return [{"role": "user", "content": prompt}]
    raise RowError(line, '"prompt" is missing (or give "messages")')


def _string_field(line: int, row: dict[str, Any], name: str) -> str:
    if name not in row:
        raise RowError(line, f'"{name}" is missing')
    value = row[name]
    if not isinstance(value, str):
        raise RowError(line, f'"{name}" must be a string')
    return value


def _metadata(line: int, row: dict[str, Any]) -> dict[str, Any]:
    metadata = row.get("metadata", {})
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise RowError(line, '"metadata" must be an object')
    return metadata


def _split(line: int, row: dict[str, Any]) -> str:
    split = row.get("split", Prompt.Split.TRAIN)
    if split not in Prompt.Split.values:
        raise RowError(line, f'"split" must be one of {", ".join(Prompt.Split.values)}')
    return str(split)


# --- Writing -------------------------------------------------------------------------


class _PromptCache:
    """Prompts of one project by content hash, loaded as rows arrive."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.known: dict[str, Prompt] = {}

    def get_or_create(
        self, messages: list[dict[str, str]], metadata: dict[str, Any], split: str
    ) -> tuple[Prompt, bool]:
        key = messages_hash(messages)
        if key in self.known:
            return self.known[key], False
        existing = Prompt.objects.filter(project=self.project, content_hash=key).first()
        if existing is not None:
            self.known[key] = existing
            return existing, False
        prompt = Prompt.objects.create(
            project=self.project, messages=messages, metadata=metadata, split=split
        )
        self.known[key] = prompt
        return prompt, True


def import_prompts(project: Project, rows: Iterable[tuple[int, dict[str, Any]]]) -> ImportReport:
    report = ImportReport()
    with transaction.atomic():
        cache = _PromptCache(project)
        for line, row in rows:
            report.rows += 1
            messages = parse_messages(line, row)
            if messages[-1]["role"] == "assistant":
                raise RowError(line, "the last message of a prompt must not be the assistant's")
            _, created = cache.get_or_create(messages, _metadata(line, row), _split(line, row))
            if created:
                report.prompts_added += 1
            else:
                report.prompts_skipped += 1
    return report


def import_pairs(
    project: Project,
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    round_number: int | None = None,
) -> ImportReport:
    report = ImportReport()
    with transaction.atomic():
        cache = _PromptCache(project)
        pending: list[Comparison] = []
        for line, row in rows:
            report.rows += 1
            messages = parse_messages(line, row)
            text_a = _string_field(line, row, "completion_a")
            text_b = _string_field(line, row, "completion_b")
            kind = row.get("kind", Comparison.Kind.TRAIN)
            if kind not in Comparison.Kind.values:
                raise RowError(line, f'"kind" must be one of {", ".join(Comparison.Kind.values)}')
            prompt, created = cache.get_or_create(messages, _metadata(line, row), _split(line, row))
            report.prompts_added += int(created)
            a = Completion.objects.create(prompt=prompt, text=text_a)
            b = Completion.objects.create(prompt=prompt, text=text_b)
            pending.append(
                Comparison(
                    project=project,
                    prompt=prompt,
                    completion_a=a,
                    completion_b=b,
                    kind=kind,
                    round=round_number,
                )
            )
            if len(pending) >= BATCH:
                Comparison.objects.bulk_create(pending)
                report.comparisons_added += len(pending)
                pending = []
        Comparison.objects.bulk_create(pending)
        report.comparisons_added += len(pending)
    return report


KINDS = {"prompts": import_prompts, "pairs": import_pairs}


def import_jsonl(project: Project, kind: str, stream: IO[bytes] | Iterable[bytes | str]) -> ImportReport:
    if kind not in KINDS:
        raise InvalidInput(f'kind must be one of {", ".join(KINDS)}')
    report = KINDS[kind](project, iter_jsonl(stream))
    if report.rows == 0:
        raise InvalidInput("The file holds no rows.")
    return report


def import_records(project: Project, kind: str, records: list[Any]) -> ImportReport:
    """Import a JSON list (the API's body); item i is reported as line i + 1."""
    if not isinstance(records, list):
        raise InvalidInput("Send a JSON list of objects.")

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, item in enumerate(records, start=1):
            if not isinstance(item, dict):
                raise RowError(i, "each item must be a JSON object")
            yield i, item

    if not records:
        raise InvalidInput("The list is empty.")
    try:
        return KINDS[kind](project, rows())
    except RowError as exc:
        raise RowError(exc.line, exc.message.split(": ", 1)[1], unit="item") from None
