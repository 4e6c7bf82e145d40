"""Exports: preference pairs and raw judgments, streamed row by row.

Every exporter reads the database through ``iterator()`` in chunks and writes as it goes:
JSONL and CSV are generators of byte chunks (an HTTP response sends the first chunk at
once), Parquet and Arrow are written in row-group batches. Annotators appear only as a
salted hash per project. Model versions are named as everywhere else ("base", "v1", ...), with
the database id beside the name in the pair formats.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.db.models import OuterRef, Subquery

from annotate.errors import InvalidInput
from annotate.models import Assignment, Project, choice_as_shown

from .card import ExportStats, dataset_card
from .formats import hh_transcript
from .labels import PairOptions, preference_pairs, selected_comparisons, selected_judgments
from .versions import version_ids, version_labels

EXPORT_FORMATS = ("trl", "trl-plain", "parquet", "csv", "judgments")
# "file": the data file alone; "zip": the data file and README.md (the card);
# "hf": a Hugging Face ``datasets`` directory (save_to_disk layout) with the card.
BUNDLES = ("file", "zip", "hf")
EXTENSIONS = {
    "trl": "jsonl",
    "trl-plain": "jsonl",
    "parquet": "parquet",
    "csv": "csv",
    "judgments": "jsonl",
}
STREAMED = ("trl", "trl-plain", "csv", "judgments")
CHUNK_BYTES = 1 << 16
ARROW_BATCH = 5000
Progress = Callable[[int], None]

_MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
_PAIR_META = [
    ("comparison_id", pa.int64()),
    ("prompt_id", pa.int64()),
    ("label", pa.string()),
    ("round", pa.int64()),
    ("kind", pa.string()),
    ("split", pa.string()),
    ("votes_chosen", pa.int64()),
    ("votes_rejected", pa.int64()),
    ("votes_tie", pa.int64()),
    ("votes_both_bad", pa.int64()),
    ("votes_total", pa.int64()),
    ("agreement", pa.float64()),
    ("weight", pa.float64()),
    # The versions that sampled the two completions, "base", "v1", ... (null: imported), and
    # their ModelVersion ids.
    ("chosen_model_version", pa.string()),
    ("rejected_model_version", pa.string()),
    ("chosen_model_version_id", pa.int64()),
    ("rejected_model_version_id", pa.int64()),
    # Sampling parameters: a JSON object in JSONL, a JSON string in CSV, Parquet and Arrow.
    ("chosen_generation_params", pa.string()),
    ("rejected_generation_params", pa.string()),
    # False: the model was cut off by its token budget (train it as a prefix, with no
    # end-of-turn token); null: not known (imported, or recorded before prefloop kept it).
    ("chosen_finished", pa.bool_()),
    ("rejected_finished", pa.bool_()),
]
SCHEMAS = {
    "trl": pa.schema(
        [("prompt", _MESSAGES), ("chosen", _MESSAGES), ("rejected", _MESSAGES), *_PAIR_META]
    ),
    "trl-plain": pa.schema(
        [("prompt", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()), *_PAIR_META]
    ),
    "csv": pa.schema(
        [
            ("prompt", pa.string()),
            ("messages", pa.string()),
            ("chosen", pa.string()),
            ("rejected", pa.string()),
            *_PAIR_META,
        ]
    ),
    "judgments": pa.schema(
        [
            ("judgment_id", pa.int64()),
            ("comparison_id", pa.int64()),
            ("prompt_id", pa.int64()),
            ("round", pa.int64()),
            ("kind", pa.string()),
            ("annotator", pa.string()),
            ("source", pa.string()),
            ("choice", pa.string()),
            ("strength", pa.int64()),
            ("rationale", pa.string()),
            ("left_is_a", pa.bool_()),
            ("shown_choice", pa.string()),
            ("a_finished", pa.bool_()),
            ("b_finished", pa.bool_()),
            ("a_model_version", pa.string()),
            ("b_model_version", pa.string()),
            ("duration_ms", pa.int64()),
            ("shown_at", pa.string()),
            ("created_at", pa.string()),
        ]
    ),
}
SCHEMAS["parquet"] = SCHEMAS["trl"]
# Added to the pair formats when the options ask for soft labels (``label_smoothing``).
_LABEL_SMOOTHING = pa.field("label_smoothing", pa.float64())
# Object-valued columns: kept as objects in JSONL, written as JSON text where a column is a string.
_JSON_COLUMNS = ("chosen_generation_params", "rejected_generation_params")


def export_schema(fmt: str, options: PairOptions) -> pa.Schema:
    """The columns of an export in format ``fmt`` with these options."""
    schema = SCHEMAS[fmt]
    if options.label_smoothing and fmt != "judgments":
        schema = schema.append(_LABEL_SMOOTHING)
    return schema


def check_format(fmt: str, bundle: str = "file") -> None:
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f'"format" must be one of {", ".join(EXPORT_FORMATS)}')
    if bundle not in BUNDLES:
        raise InvalidInput(f'"bundle" must be one of {", ".join(BUNDLES)}')


def check_options(project: Project, options: PairOptions) -> None:
    """Raise InvalidInput before anything is written if the options name an unknown version."""
    version_ids(project, options.versions)


def pseudonym(project: Project, key: str) -> str:
    """A stable id for one annotator in one project's exports; not reversible without the salt."""
    digest = hmac.new(project.export_salt.encode(), key.encode("utf-8"), hashlib.sha256)
    return "ann-" + digest.hexdigest()[:16]


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """A single user turn as its text; longer chats as a Human/Assistant transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return hh_transcript(messages)


# --- Rows -----------------------------------------------------------------------------


def _version_name(names: dict[int, str], version_id: int | None) -> str | None:
    """A completion's version name; None for imported completions and unknown ids."""
    return names.get(version_id) if version_id is not None else None


def _meta(pair: dict[str, Any], options: PairOptions, names: dict[int, str]) -> dict[str, Any]:
    row = {name: pair.get(name) for name, _ in _PAIR_META}
    for side in ("chosen", "rejected"):
        row[f"{side}_model_version"] = _version_name(names, pair[f"{side}_model_version_id"])
    if options.label_smoothing:
        row["label_smoothing"] = pair["label_smoothing"]
    return row


def _pair_row(
    fmt: str, pair: dict[str, Any], options: PairOptions, names: dict[int, str]
) -> dict[str, Any]:
    if fmt in ("trl", "parquet"):
        return {
            "prompt": pair["prompt"],
            "chosen": [{"role": "assistant", "content": pair["chosen"]}],
            "rejected": [{"role": "assistant", "content": pair["rejected"]}],
            **_meta(pair, options, names),
        }
    if fmt == "trl-plain":
        return {
            "prompt": plain_prompt(pair["prompt"]),
            "chosen": pair["chosen"],
            "rejected": pair["rejected"],
            **_meta(pair, options, names),
        }
    return {
        "prompt": plain_prompt(pair["prompt"]),
        "messages": json.dumps(pair["prompt"], ensure_ascii=False),
        "chosen": pair["chosen"],
        "rejected": pair["rejected"],
        **_meta(pair, options, names),
    }


def _as_text(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its object-valued columns as JSON text, for string columns."""
    for key in _JSON_COLUMNS:
        if key in row and row[key] is not None and not isinstance(row[key], str):
            row[key] = json.dumps(row[key], ensure_ascii=False, sort_keys=True)
    return row


def judgment_rows(
    project: Project, options: PairOptions, stats: ExportStats, versions: dict[int, str]
) -> Iterator[dict[str, Any]]:
    qs = selected_judgments(project, options)
    shown_at = Assignment.objects.filter(
        comparison=OuterRef("comparison_id"), annotator=OuterRef("annotator_id")
    ).values("leased_at")[:1]
    rows = (
        qs.annotate(shown_at=Subquery(shown_at))
        .order_by("pk")
        .values(
            "pk",
            "comparison_id",
            "comparison__prompt_id",
            "comparison__round",
            "comparison__kind",
            "annotator_id",
            "external_annotator",
            "source",
            "choice",
            "strength",
            "rationale",
            "left_is_a",
            "comparison__completion_a__finished",
            "comparison__completion_b__finished",
            "comparison__completion_a__model_version_id",
            "comparison__completion_b__model_version_id",
            "duration_ms",
            "shown_at",
            "created_at",
        )
    )
    names: dict[str, str] = {}
    for j in rows.iterator(chunk_size=5000):
        key = (
            f"user:{j['annotator_id']}"
            if j["annotator_id"] is not None
            else (f"external:{j['external_annotator']}")
        )
        if key not in names:
            names[key] = pseudonym(project, key)
            stats.annotators.add(key)
        stats.rows += 1
        shown_at_value = j["shown_at"]
        yield {
            "judgment_id": j["pk"],
            "comparison_id": j["comparison_id"],
            "prompt_id": j["comparison__prompt_id"],
            "round": j["comparison__round"],
            "kind": j["comparison__kind"],
            "annotator": names[key],
            "source": j["source"],
            "choice": j["choice"],
            "strength": j["strength"],
            "rationale": j["rationale"],
            "left_is_a": j["left_is_a"],
            "shown_choice": choice_as_shown(j["choice"], j["left_is_a"]),
            "a_finished": j["comparison__completion_a__finished"],
            "b_finished": j["comparison__completion_b__finished"],
            "a_model_version": _version_name(
                versions, j["comparison__completion_a__model_version_id"]
            ),
            "b_model_version": _version_name(
                versions, j["comparison__completion_b__model_version_id"]
            ),
            "duration_ms": j["duration_ms"],
            "shown_at": shown_at_value.isoformat() if shown_at_value else None,
            "created_at": j["created_at"].isoformat(),
        }


def export_rows(
    project: Project, fmt: str, options: PairOptions, stats: ExportStats | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of an export in format ``fmt``, as plain dicts."""
    check_format(fmt)
    stats = stats if stats is not None else ExportStats()
    versions = version_labels(project)
    if fmt == "judgments":
        yield from judgment_rows(project, options, stats, versions)
        return
    for pair in preference_pairs(project, options):
        stats.add_pair(pair)
        yield _pair_row(fmt, pair, options, versions)


def export_card(project: Project, fmt: str, options: PairOptions) -> str:
    """The card of an export that is not written: the selection runs once to count."""
    check_options(project, options)
    stats = ExportStats()
    for _ in export_rows(project, fmt, options, stats):
        pass
    return dataset_card(project, fmt, options, stats)


def estimated_total(project: Project, fmt: str, options: PairOptions) -> int:
    """An upper bound on the rows an export writes, for progress bars."""
    if fmt == "judgments":
        return selected_judgments(project, options).count()
    return selected_comparisons(project, options).values("pk").count()


# --- Writers --------------------------------------------------------------------------


def _counted(
    rows: Iterable[dict[str, Any]], on_progress: Progress | None
) -> Iterator[dict[str, Any]]:
    for n, row in enumerate(rows, start=1):
        yield row
        if on_progress is not None and n % 1000 == 0:
            on_progress(n)


def stream_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer: list[str] = []
    size = 0
    for row in rows:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        buffer.append(line)
        size += len(line)
        if size >= CHUNK_BYTES:
            yield "".join(buffer).encode("utf-8")
            buffer, size = [], 0
    if buffer:
        yield "".join(buffer).encode("utf-8")


def stream_csv(rows: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[bytes]:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(_as_text(row))
        if out.tell() >= CHUNK_BYTES:
            yield out.getvalue().encode("utf-8")
            out.seek(0)
            out.truncate()
    if out.tell():
        yield out.getvalue().encode("utf-8")


def _arrow_batches(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> Iterator[pa.Table]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(_as_text(row))
        if len(batch) >= ARROW_BATCH:
            yield pa.Table.from_pylist(batch, schema=schema)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=schema)


def write_parquet(
    rows: Iterable[dict[str, Any]], schema: pa.Schema, sink: str | Path | IO[bytes]
) -> None:
    with pq.ParquetWriter(sink, schema) as writer:
        wrote = False
        for table in _arrow_batches(rows, schema):
            writer.write_table(table)
            wrote = True
        if not wrote:
            writer.write_table(schema.empty_table())


def write_arrow_stream(rows: Iterable[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for table in _arrow_batches(rows, schema):
            writer.write_table(table)


def stream_export(
    project: Project,
    fmt: str,
    options: PairOptions,
    stats: ExportStats | None = None,
    on_progress: Progress | None = None,
) -> Iterator[bytes]:
    """The bytes of a JSONL or CSV export, produced as the rows are read."""
    if fmt not in STREAMED:
        raise InvalidInput(f"{fmt} exports are written to a file, not streamed.")
    check_options(project, options)
    rows = _counted(export_rows(project, fmt, options, stats), on_progress)
    if fmt == "csv":
        return stream_csv(rows, export_schema("csv", options).names)
    return stream_jsonl(rows)


def write_data_file(
    project: Project,
    fmt: str,
    options: PairOptions,
    sink: Path | IO[bytes],
    stats: ExportStats,
    on_progress: Progress | None = None,
) -> None:
    """Write one export's data file (JSONL, CSV or Parquet) to a path or binary file."""
    if fmt == "parquet":
        rows = _counted(export_rows(project, fmt, options, stats), on_progress)
        write_parquet(
            rows,
            export_schema("parquet", options),
            sink if isinstance(sink, Path) else pa.PythonFile(sink, mode="w"),
        )
        return
    chunks = stream_export(project, fmt, options, stats, on_progress)
    if isinstance(sink, Path):
        with sink.open("wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
    else:
        for chunk in chunks:
            sink.write(chunk)


def data_filename(project: Project, fmt: str) -> str:
    return f"{project.slug}-{fmt}.{EXTENSIONS[fmt]}"


def export_filename(project: Project, fmt: str, bundle: str) -> str:
    if bundle == "file":
        return data_filename(project, fmt)
    return f"{project.slug}-{fmt}-{bundle}.zip"


def write_hf_directory(
    project: Project,
    fmt: str,
    options: PairOptions,
    directory: Path,
    on_progress: Progress | None = None,
) -> ExportStats:
    """A directory that ``datasets.load_from_disk`` opens (the layout ``save_to_disk`` writes)."""
    directory.mkdir(parents=True, exist_ok=True)
    stats = ExportStats()
    schema = export_schema(fmt, options)
    data_name = "data-00000-of-00001.arrow"
    rows = _counted(export_rows(project, fmt, options, stats), on_progress)
    write_arrow_stream(rows, schema, directory / data_name)
    card = dataset_card(project, fmt, options, stats)
    info = {"citation": "", "description": card, "homepage": "", "license": project.license}
    (directory / "dataset_info.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
    fingerprint = hashlib.sha256(f"{project.pk}:{fmt}:{options.as_dict()}".encode()).hexdigest()[
        :16
    ]
    state: dict[str, Any] = {
        "_data_files": [{"filename": data_name}],
        "_fingerprint": fingerprint,
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    (directory / "state.json").write_text(json.dumps(state, indent=2))
    (directory / "README.md").write_text(card, encoding="utf-8")
    return stats


def write_export(
    project: Project,
    fmt: str,
    options: PairOptions,
    target: Path,
    *,
    bundle: str = "file",
    on_progress: Progress | None = None,
) -> ExportStats:
    """Write an export to ``target``: a file, a zip, or (bundle "hf") a directory."""
    check_format(fmt, bundle)
    check_options(project, options)
    if bundle == "hf":
        return write_hf_directory(project, fmt, options, target, on_progress)
    stats = ExportStats()
    if bundle == "file":
        write_data_file(project, fmt, options, target, stats, on_progress)
        return stats
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open(data_filename(project, fmt), "w", force_zip64=True) as member:
            if fmt == "parquet":
                # Parquet needs a seekable sink; spool it, then copy it into the archive.
                with tempfile.TemporaryFile() as spool:
                    write_data_file(project, fmt, options, spool, stats, on_progress)
                    spool.seek(0)
                    shutil.copyfileobj(spool, member)
            else:
                write_data_file(project, fmt, options, member, stats, on_progress)
        archive.writestr("README.md", dataset_card(project, fmt, options, stats))
    return stats


def zip_directory(directory: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, f"{directory.name}/{path.relative_to(directory)}")
