"""What a row of each import format means: a prompt, a pair to annotate, or a labeled pair.

Each parser takes one row (a dict from a reader) and returns an ``Item``, or raises a
RowError naming the field. Tabular files (CSV, TSV) carry text cells only, so there a
``messages`` or ``metadata`` cell holds JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from annotate.errors import InvalidInput
from annotate.models import Comparison, Judgment, Prompt

from .errors import RowError

ROLES = ("system", "user", "assistant")
# The largest round number a comparison can carry (a 32-bit column on every database).
MAX_ROUND = 2**31 - 1
# An imported judgment's duration is kept only up to a day, as the API's own submits.
MAX_DURATION_MS = 86_400_000
ON_ERROR = ("stop", "skip")
Messages = list[dict[str, str]]


@dataclass
class Vote:
    choice: str
    external_annotator: str
    strength: int | None = None
    rationale: str = ""
    duration_ms: int | None = None


@dataclass
class Item:
    messages: Messages
    metadata: dict[str, Any] = field(default_factory=dict)
    split: str = Prompt.Split.TRAIN
    # (completion A, completion B) for pairs; None for a bare prompt.
    pair: tuple[str, str] | None = None
    kind: str = Comparison.Kind.TRAIN
    votes: list[Vote] = field(default_factory=list)


@dataclass
class ImportOptions:
    # The column (or JSON field) that holds a prompt's text in prompt files.
    column: str = "prompt"
    # Comparison kind for pairs that do not name one; labeled data defaults to "train".
    kind: str | None = None
    round: int | None = None
    split: str | None = None
    # "stop": the first bad row rejects the file (nothing written); "skip": the good rows are
    # imported and every bad one is reported with its reason.
    on_error: str = "stop"
    # Check every row and report every problem, writing nothing.
    validate: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportOptions:
        column = str(data.get("column") or "prompt")
        kind = data.get("kind") or None
        if kind is not None and kind not in Comparison.PAIR_KINDS:
            raise InvalidInput(f'"kind" must be one of {", ".join(Comparison.PAIR_KINDS)}')
        split = data.get("split") or None
        if split is not None and split not in Prompt.Split.values:
            raise InvalidInput(f'"split" must be one of {", ".join(Prompt.Split.values)}')
        raw_round = data.get("round")
        round_number: int | None = None
        if raw_round not in (None, ""):
            try:
                round_number = int(str(raw_round))
            except ValueError:
                raise InvalidInput('"round" must be a whole number') from None
            if round_number < 0:
                raise InvalidInput('"round" must not be negative')
            if round_number > MAX_ROUND:
                raise InvalidInput(f'"round" must be at most {MAX_ROUND}')
        on_error = data.get("on_error") or ("skip" if _flag(data.get("skip_bad_rows")) else "stop")
        if on_error not in ON_ERROR:
            raise InvalidInput(f'"on_error" must be one of {", ".join(ON_ERROR)}')
        return cls(
            column=column,
            kind=kind,
            round=round_number,
            split=split,
            on_error=str(on_error),
            validate=_flag(data.get("validate")),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "round": self.round,
            "split": self.split,
            "on_error": self.on_error,
            "validate": self.validate,
        }


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


# --- Fields ---------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _json_cell(line: int, name: str, value: Any, tabular: bool) -> Any:
    if tabular and isinstance(value, str):
        try:
            return json.loads(value, parse_constant=_no_constant)
        except (json.JSONDecodeError, ValueError, RecursionError):
            raise RowError(line, f'"{name}" is not valid JSON') from None
    return value


def message_list(line: int, name: str, value: Any) -> Messages:
    if not isinstance(value, list) or not value:
        raise RowError(line, f'"{name}" must be a non-empty list of messages')
    clean = []
    for i, msg in enumerate(value):
        where = f'"{name}"[{i}]'
        if not isinstance(msg, dict):
            raise RowError(line, f"{where} must be an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise RowError(line, f'{where}."role" must be one of {", ".join(ROLES)}')
        if not isinstance(content, str):
            raise RowError(line, f'{where}."content" must be a string')
        clean.append({"role": str(role), "content": content})
    return clean


def prompt_messages(
    line: int, row: dict[str, Any], tabular: bool, column: str = "prompt"
) -> Messages:
    """The chat of a row: ``messages`` (a list of turns) or ``column`` (one user turn)."""
    if row.get("messages") not in (None, ""):
        return message_list(
            line, "messages", _json_cell(line, "messages", row["messages"], tabular)
        )
    if column in row and row[column] is not None:
        prompt = row[column]
        if isinstance(prompt, list):
            return message_list(line, column, prompt)
        if not isinstance(prompt, str):
            raise RowError(line, f'"{column}" must be a string or a list of messages')
        if not prompt.strip():
            raise RowError(line, f'"{column}" must not be empty')
        return [{"role": "user", "content": prompt}]
    if column == "prompt":
        raise RowError(line, '"prompt" is missing (or give "messages")')
    raise RowError(line, f'"{column}" is missing')


def string_field(line: int, row: dict[str, Any], name: str) -> str:
    if name not in row or row[name] is None:
        raise RowError(line, f'"{name}" is missing')
    value = row[name]
    if not isinstance(value, str):
        raise RowError(line, f'"{name}" must be a string')
    return value


def metadata_field(line: int, row: dict[str, Any], tabular: bool) -> dict[str, Any]:
    metadata = _json_cell(line, "metadata", row.get("metadata"), tabular)
    if metadata in (None, ""):
        return {}
    if not isinstance(metadata, dict):
        raise RowError(line, '"metadata" must be an object')
    return metadata


def split_field(line: int, row: dict[str, Any], options: ImportOptions) -> str:
    split = row.get("split") or options.split or Prompt.Split.TRAIN
    if split not in Prompt.Split.values:
        raise RowError(line, f'"split" must be one of {", ".join(Prompt.Split.values)}')
    return str(split)


def kind_field(line: int, row: dict[str, Any], options: ImportOptions) -> str:
    kind = row.get("kind") or options.kind or Comparison.Kind.TRAIN
    if kind not in Comparison.PAIR_KINDS:
        raise RowError(line, f'"kind" must be one of {", ".join(Comparison.PAIR_KINDS)}')
    return str(kind)


def _reply(line: int, name: str, value: Any) -> str:
    """A completion given as text or as a one-message assistant turn."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        messages = message_list(line, name, value)
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            raise RowError(line, f'"{name}" must be one assistant message')
        return messages[0]["content"]
    raise RowError(line, f'"{name}" must be a string or a list of messages')


def _split_conversations(
    line: int, chosen: Messages, rejected: Messages
) -> tuple[Messages, str, str]:
    """Shared turns become the prompt; the final assistant turns are the two replies."""
    for name, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1]["role"] != "assistant":
            raise RowError(line, f'"{name}" must end with an assistant message')
    if chosen[:-1] != rejected[:-1]:
        raise RowError(line, '"chosen" and "rejected" must share every turn but the last')
    return chosen[:-1], chosen[-1]["content"], rejected[-1]["content"]


def _base(line: int, row: dict[str, Any], tabular: bool, options: ImportOptions) -> dict[str, Any]:
    return {
        "metadata": metadata_field(line, row, tabular),
        "split": split_field(line, row, options),
        "kind": kind_field(line, row, options),
    }


def _annotator(row: dict[str, Any], default: str) -> str:
    value = row.get("annotator")
    return str(value) if value not in (None, "") else default


# --- Formats --------------------------------------------------------------------------


def parse_prompt(line: int, row: dict[str, Any], tabular: bool, options: ImportOptions) -> Item:
    messages = prompt_messages(line, row, tabular, options.column)
    if messages[-1]["role"] == "assistant":
        raise RowError(line, "the last message of a prompt must not be the assistant's")
    return Item(
        messages=messages,
        metadata=metadata_field(line, row, tabular),
        split=split_field(line, row, options),
    )


def parse_pair(line: int, row: dict[str, Any], tabular: bool, options: ImportOptions) -> Item:
    messages = prompt_messages(line, row, tabular)
    pair = (string_field(line, row, "completion_a"), string_field(line, row, "completion_b"))
    return Item(messages=messages, pair=pair, **_base(line, row, tabular, options))


def parse_trl(line: int, row: dict[str, Any], tabular: bool, options: ImportOptions) -> Item:
    """TRL preference rows: explicit ``prompt`` or prompt implied by shared turns."""
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise RowError(line, f'"{name}" is missing')
    chosen_raw, rejected_raw = row["chosen"], row["rejected"]
    has_prompt = row.get("prompt") not in (None, "") or row.get("messages") not in (None, "")
    if has_prompt:
        messages = prompt_messages(line, row, tabular)
        chosen, rejected = (
            _reply(line, "chosen", chosen_raw),
            _reply(line, "rejected", rejected_raw),
        )
    elif isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        messages, chosen, rejected = _split_conversations(
            line,
            message_list(line, "chosen", chosen_raw),
            message_list(line, "rejected", rejected_raw),
        )
        if not messages:
            raise RowError(line, '"prompt" is missing')
    else:
        raise RowError(line, '"prompt" is missing')
    vote = Vote(Judgment.Choice.A, _annotator(row, "trl"))
    return Item(
        messages=messages,
        pair=(chosen, rejected),
        votes=[vote],
        **_base(line, row, tabular, options),
    )


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_hh_transcript(line: int, name: str, text: Any) -> Messages:
    """``\\n\\nHuman: ...\\n\\nAssistant: ...`` as a list of messages."""
    if not isinstance(text, str):
        raise RowError(line, f'"{name}" must be a string')
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RowError(line, f'"{name}" must be a transcript starting with "\\n\\nHuman:"')
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": _HH_ROLES[speaker], "content": content.removeprefix(" ")})
    return messages


def hh_transcript(messages: Messages) -> str:
    """The inverse of parse_hh_transcript (system turns are written as the human's)."""
    speakers = {"user": "Human", "system": "Human", "assistant": "Assistant"}
    return "".join(f"\n\n{speakers[m['role']]}: {m['content']}" for m in messages)


def parse_hh(line: int, row: dict[str, Any], tabular: bool, options: ImportOptions) -> Item:
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise RowError(line, f'"{name}" is missing')
    messages, chosen, rejected = _split_conversations(
        line,
        parse_hh_transcript(line, "chosen", row["chosen"]),
        parse_hh_transcript(line, "rejected", row["rejected"]),
    )
    if not messages:
        raise RowError(line, '"chosen" holds no human turn before the reply')
    vote = Vote(Judgment.Choice.A, _annotator(row, "hh"))
    return Item(
        messages=messages,
        pair=(chosen, rejected),
        votes=[vote],
        **_base(line, row, tabular, options),
    )


def _score(line: int, row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RowError(line, f'"{name}" must be a number') from None


def parse_ultrafeedback(
    line: int, row: dict[str, Any], tabular: bool, options: ImportOptions
) -> Item:
    """UltraFeedback-binarized rows: ``chosen``/``rejected`` are whole conversations."""
    for name in ("chosen", "rejected"):
        if row.get(name) is None:
            raise RowError(line, f'"{name}" is missing')
    chosen_raw = _json_cell(
        line, "chosen", row["chosen"], tabular and str(row["chosen"]).startswith("[")
    )
    rejected_raw = _json_cell(
        line, "rejected", row["rejected"], tabular and str(row["rejected"]).startswith("[")
    )
    if isinstance(chosen_raw, list) and isinstance(rejected_raw, list):
        messages, chosen, rejected = _split_conversations(
            line,
            message_list(line, "chosen", chosen_raw),
            message_list(line, "rejected", rejected_raw),
        )
        if not messages:
            messages = prompt_messages(line, row, tabular)
    else:
        messages = prompt_messages(line, row, tabular)
        chosen, rejected = (
            _reply(line, "chosen", chosen_raw),
            _reply(line, "rejected", rejected_raw),
        )
    metadata = metadata_field(line, row, tabular)
    if row.get("prompt_id") not in (None, ""):
        metadata = {**metadata, "prompt_id": str(row["prompt_id"])}
    score_chosen, score_rejected = (
        _score(line, row, "score_chosen"),
        _score(line, row, "score_rejected"),
    )
    choice = Judgment.Choice.A
    if score_chosen is not None and score_rejected is not None:
        if score_chosen < score_rejected:
            raise RowError(line, '"score_chosen" is lower than "score_rejected"')
        if score_chosen == score_rejected:
            choice = Judgment.Choice.TIE
    return Item(
        messages=messages,
        metadata=metadata,
        split=split_field(line, row, options),
        kind=kind_field(line, row, options),
        pair=(chosen, rejected),
        votes=[Vote(choice, _annotator(row, "ultrafeedback"))],
    )


# Label Studio names the two texts after the template's variables; these are the usual ones.
_LS_ANSWER_KEYS = (
    ("answer1", "answer2"),
    ("completion_a", "completion_b"),
    ("text1", "text2"),
    ("left", "right"),
    ("response_a", "response_b"),
)


def _ls_annotator(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("email") or value.get("id") or "label-studio")
    return f"label-studio:{value}" if value not in (None, "") else "label-studio"


def _ls_vote(line: int, index: int, annotation: Any) -> Vote | None:
    where = f'"annotations"[{index}]'
    if not isinstance(annotation, dict):
        raise RowError(line, f"{where} must be an object", unit="item")
    if annotation.get("was_cancelled"):
        return None
    results = annotation.get("result")
    if not isinstance(results, list):
        raise RowError(line, f'{where}."result" must be a list', unit="item")
    for result in results:
        if not isinstance(result, dict) or result.get("type") != "pairwise":
            continue
        selected = (result.get("value") or {}).get("selected")
        if selected not in ("left", "right"):
            raise RowError(line, f'{where}: "selected" must be "left" or "right"', unit="item")
        return Vote(
            choice=Judgment.Choice.A if selected == "left" else Judgment.Choice.B,
            external_annotator=_ls_annotator(annotation.get("completed_by")),
            duration_ms=_ls_duration(line, where, annotation.get("lead_time")),
        )
    return None


def _ls_duration(line: int, where: str, lead_time: Any) -> int | None:
    """Label Studio's ``lead_time`` (seconds) in milliseconds; None when absent or negative."""
    if not isinstance(lead_time, int | float) or isinstance(lead_time, bool):
        return None
    if not math.isfinite(lead_time):
        raise RowError(line, f'{where}."lead_time" must be a finite number', unit="item")
    if lead_time < 0:
        return None
    return min(int(lead_time * 1000), MAX_DURATION_MS)


def parse_label_studio(
    line: int, row: dict[str, Any], tabular: bool, options: ImportOptions
) -> Item:
    """A task of Label Studio's JSON export from a pairwise (Pairwise tag) project."""
    data = row.get("data")
    if not isinstance(data, dict):
        raise RowError(line, '"data" is missing', unit="item")
    for key_a, key_b in _LS_ANSWER_KEYS:
        if key_a in data and key_b in data:
            break
    else:
        names = " or ".join(f'"{a}"/"{b}"' for a, b in _LS_ANSWER_KEYS[:2])
        raise RowError(line, f'"data" has no pair of texts (expected {names})', unit="item")
    messages = prompt_messages(line, data, tabular)
    pair = (string_field(line, data, key_a), string_field(line, data, key_b))
    annotations = row.get("annotations", row.get("completions", []))
    if not isinstance(annotations, list):
        raise RowError(line, '"annotations" must be a list', unit="item")
    votes = [v for i, a in enumerate(annotations) if (v := _ls_vote(line, i, a)) is not None]
    metadata = {"label_studio_id": row["id"]} if "id" in row else {}
    return Item(
        messages=messages,
        metadata=metadata,
        split=split_field(line, data, options),
        kind=kind_field(line, data, options),
        pair=pair,
        votes=votes,
    )


Parser = Callable[[int, dict[str, Any], bool, ImportOptions], Item]

# Format name -> (parser, file types it can come in).
IMPORT_FORMATS: dict[str, tuple[Parser, tuple[str, ...]]] = {
    "prompts": (parse_prompt, ("jsonl", "json", "csv", "tsv", "txt", "parquet")),
    "pairs": (parse_pair, ("jsonl", "json", "csv", "tsv", "parquet")),
    "trl": (parse_trl, ("jsonl", "json", "csv", "tsv", "parquet")),
    "hh": (parse_hh, ("jsonl", "json", "csv", "tsv", "parquet")),
    "ultrafeedback": (parse_ultrafeedback, ("jsonl", "json", "csv", "tsv", "parquet")),
    "label-studio": (parse_label_studio, ("json", "jsonl")),
}
