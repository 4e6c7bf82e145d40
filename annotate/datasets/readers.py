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

from annotate.errors import InvalidInput

from .errors import RowError
from .readers_limits import check_row, check_text_length
from .readers_parquet import read_parquet

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


def decoded_lines(
    stream: Iterable[bytes | str], *, lenient: bool = False
) -> Iterator[tuple[int, str | RowError]]:
    """(line number, text) of each line, decoding UTF-8 one line at a time.

    A line that is not UTF-8 or longer than a row may be raises, or with ``lenient`` comes as
    its RowError in place of the text.
    """
    for number, raw in enumerate(stream, start=1):
        try:
            if isinstance(raw, bytes):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise RowError(number, "the file is not UTF-8 text") from None
            else:
                text = raw
            check_text_length(number, len(text))
        except RowError as exc:
            if not lenient:
                raise
            yield number, exc
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_line(number: int, text: str) -> dict[str, Any]:
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
    return obj


def read_jsonl(stream: Iterable[bytes | str], *, lenient: bool = False) -> Rows:
    for number, text in decoded_lines(stream, lenient=lenient):
        if isinstance(text, RowError):
            yield number, text  # type: ignore[misc]
            continue
        if not text.strip():
            continue
        try:
            obj = _json_line(number, text)
        except RowError as exc:
            if not lenient:
                raise
            yield number, exc  # type: ignore[misc]
            continue
        yield number, obj


def read_text(stream: Iterable[bytes | str], *, lenient: bool = False) -> Rows:
    """One prompt per non-blank line; the line's own text, without its line ending."""
    for number, text in decoded_lines(stream, lenient=lenient):
        if isinstance(text, RowError):
            yield number, text  # type: ignore[misc]
            continue
        line = text.rstrip("\r\n")
        if line.strip():
            yield number, {"prompt": line}


def read_csv(stream: Iterable[bytes | str], *, delimiter: str = ",", lenient: bool = False) -> Rows:
    """Rows of a CSV or TSV file with a header line, as {column: text}.

    With ``lenient``, a bad record comes as its RowError and reading goes on.
    """
    lines = decoded_lines(stream, lenient=lenient)
    position = {"line": 0}
    pending: list[RowError] = []

    def feed() -> Iterator[str]:
        for number, text in lines:
            position["line"] = number
            if isinstance(text, RowError):
                pending.append(text)
                yield "\n"
                continue
            yield text

    reader = csv.reader(feed(), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise RowError(1, f"not valid CSV ({exc})") from None
    if pending:
        raise pending[0]
    if not any(h.strip() for h in header):
        raise RowError(1, "the first line must name the columns")
    header = [h.strip() for h in header]
    while True:
        start = position["line"] + 1
        try:
            record = next(reader)
        except StopIteration:
            yield from ((e.line, e) for e in pending)  # type: ignore[misc]
            return
        except csv.Error as exc:
            error = RowError(start, f"not valid CSV ({exc})")
            if not lenient:
                raise error from None
            yield start, error  # type: ignore[misc]
            continue
        while pending:
            error = pending.pop(0)
            yield error.line, error  # type: ignore[misc]
        if not record or not any(cell.strip() for cell in record):
            continue
        if len(record) != len(header):
            error = RowError(start, f"expected {len(header)} fields, found {len(record)}")
            if not lenient:
                raise error
            yield start, error  # type: ignore[misc]
            continue
        yield start, dict(zip(header, record, strict=True))


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
        check_text_length(number, end - position, unit="item")
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
        check_row(number, item, unit="item")
        yield number, item


def read_rows(stream: IO[bytes], kind: str, *, lenient: bool = False) -> Rows:
    """The rows of a file of type ``kind`` (see FILE_TYPES), each within the size caps.

    With ``lenient``, a bad line of a JSONL, CSV, TSV or text file comes as its RowError (in
    place of the row) and reading goes on; a file that cannot be read on still raises.
    """
    unit = UNITS.get(kind, "line")
    return _capped(_rows(stream, kind, lenient), unit, lenient)


def _rows(stream: IO[bytes], kind: str, lenient: bool) -> Rows:
    if kind == "jsonl":
        return read_jsonl(stream, lenient=lenient)
    if kind == "json":
        return read_json_list(stream)
    if kind == "csv":
        return read_csv(stream, lenient=lenient)
    if kind == "tsv":
        return read_csv(stream, delimiter="\t", lenient=lenient)
    if kind == "txt":
        return read_text(stream, lenient=lenient)
    if kind == "parquet":
        return read_parquet(stream)
    raise InvalidInput(f"Unknown file type {kind!r}.")


def _capped(rows: Rows, unit: str, lenient: bool) -> Rows:
    for number, row in rows:
        if isinstance(row, dict):
            try:
                check_row(number, row, unit)
            except RowError as exc:
                if not lenient:
                    raise
                row = exc  # type: ignore[assignment]
        yield number, row
