"""Streaming readers: each yields ``(number, row)`` with ``row`` a dict, never the whole file.

Numbers are 1-based and name what a person would look for in the file: a line for JSONL,
CSV, TSV and text files (a CSV record is named by the line it starts on), a row for Parquet
and an item for a JSON list.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import PurePath
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from annotate.errors import InvalidInput

from .errors import RowError

Rows = Iterator[tuple[int, dict[str, Any]]]

FILE_TYPES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",
    ".parquet": "parquet",
}
# How each file type names its rows in error messages.
UNITS = {
    "jsonl": "line",
    "json": "item",
    "csv": "line",
    "tsv": "line",
    "txt": "line",
    "parquet": "row",
}
_JSON_CHUNK = 1 << 16
# Cells may hold whole long completions; the upload limit bounds them instead.
csv.field_size_limit(2**31 - 1)
_PARQUET_BATCH = 1000


def file_type(filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix not in FILE_TYPES:
        known = ", ".join(sorted(FILE_TYPES))
        raise InvalidInput(
            f'Cannot tell the file type of "{filename}": name it with one of {known}.'
        )
    return FILE_TYPES[suffix]


class CountingReader:
    """A binary stream that counts the bytes read through it (for progress bars)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.raw.readline(size)
        self.bytes_read += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False


def decoded_lines(stream: Iterable[bytes | str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoding UTF-8 one line at a time."""
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
        yield number, text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_jsonl(stream: Iterable[bytes | str]) -> Rows:
    for number, text in decoded_lines(stream):
        if not text.strip():
            continue
        try:
            obj = json.loads(text.rstrip("\r\n"), parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise RowError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        except ValueError as exc:
            raise RowError(number, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise RowError(number, "not valid JSON (nested too deeply)") from None
        if not isinstance(obj, dict):
            raise RowError(number, "each line must be a JSON object")
        yield number, obj


def read_text(stream: Iterable[bytes | str]) -> Rows:
    """One prompt per non-blank line; the line's own text, without its line ending."""
    for number, text in decoded_lines(stream):
        line = text.rstrip("\r\n")
        if line.strip():
            yield number, {"prompt": line}


def read_csv(stream: Iterable[bytes | str], *, delimiter: str = ",") -> Rows:
    """Rows of a CSV or TSV file with a header line, as {column: text}."""
    lines = decoded_lines(stream)
    position = {"line": 0}

    def feed() -> Iterator[str]:
        for number, text in lines:
            position["line"] = number
            yield text

    reader = csv.reader(feed(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise RowError(1, f"not valid CSV ({exc})") from None
    if not any(h.strip() for h in header):
        raise RowError(1, "the first line must name the columns")
    header = [h.strip() for h in header]
    while True:
        start = position["line"] + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise RowError(start, f"not valid CSV ({exc})") from None
        if not record or not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            raise RowError(start, f"expected {len(header)} fields, found {len(record)}")
        yield start, dict(zip(header, record, strict=True))


def read_parquet(source: IO[bytes]) -> Rows:
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"The file is not a Parquet file ({exc}).") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def read_json_list(stream: IO[bytes]) -> Rows:
    """The objects of a JSON list (a Label Studio export), decoded one at a time."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    buffer = ""
    position = 0
    eof = False
    raw_tail = b""

    def more() -> bool:
        nonlocal buffer, position, eof, raw_tail
        if eof:
            return False
        chunk = stream.read(_JSON_CHUNK)
        if not chunk:
            eof = True
            if raw_tail:
                raise InvalidInput("The file is not UTF-8 text.")
            return False
        data = raw_tail + chunk
        try:
            text = data.decode("utf-8")
            raw_tail = b""
        except UnicodeDecodeError as exc:
            # A character may be split across chunks: keep its first bytes for the next read.
            if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
                text, raw_tail = data[: exc.start].decode("utf-8"), data[exc.start :]
            else:
                raise InvalidInput("The file is not UTF-8 text.") from None
        buffer = buffer[position:] + text
        position = 0
        return True

    def skip_space() -> bool:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n\ufeff":
                position += 1
            if position < len(buffer):
                return True
            if not more():
                return False

    if not skip_space() or buffer[position] != "[":
        raise InvalidInput("The file must hold a JSON list of tasks.")
    position += 1
    number = 0
    while True:
        if not skip_space():
            raise RowError(number + 1, "the JSON list is not closed", unit="item")
        if buffer[position] == "]":
            return
        if number and buffer[position] == ",":
            position += 1
            if not skip_space():
                raise RowError(number + 1, "the JSON list is not closed", unit="item")
        elif number:
            raise RowError(number + 1, 'expected "," between items', unit="item")
        number += 1
        while True:
            try:
                obj, end = decoder.raw_decode(buffer, position)
                break
            except json.JSONDecodeError as exc:
                if not more():
                    raise RowError(number, f"not valid JSON ({exc.msg})", unit="item") from None
            except ValueError as exc:
                raise RowError(number, f"not valid JSON ({exc})", unit="item") from None
            except RecursionError:
                raise RowError(number, "not valid JSON (nested too deeply)", unit="item") from None
        position = end
        if not isinstance(obj, dict):
            raise RowError(number, "each item must be a JSON object", unit="item")
        yield number, obj


def read_records(records: Any) -> Rows:
    """The objects of a JSON list that is already parsed (an API request's body)."""
    if not isinstance(records, list):
        raise InvalidInput("Send a JSON list of objects.")
    if not records:
        raise InvalidInput("The list is empty.")
    for number, item in enumerate(records, start=1):
        if not isinstance(item, dict):
            raise RowError(number, "each item must be a JSON object", unit="item")
        yield number, item


def read_rows(stream: IO[bytes], kind: str) -> Rows:
    """The rows of a file of type ``kind`` (see FILE_TYPES)."""
    if kind == "jsonl":
        return read_jsonl(stream)
    if kind == "json":
        return read_json_list(stream)
    if kind == "csv":
        return read_csv(stream)
    if kind == "tsv":
        return read_csv(stream, delimiter="\t")
    if kind == "txt":
        return read_text(stream)
    if kind == "parquet":
        return read_parquet(stream)
    raise InvalidInput(f"Unknown file type {kind!r}.")
