"""Decoded size caps on imported rows, so a small compressed file cannot expand into huge
text in the web process (a 1 KB Parquet file can hold a 20-million-character cell).

``PREFLOOP_IMPORT_MAX_CELL_CHARS`` bounds one value (a prompt, a completion, a message's
content, a metadata string) and ``PREFLOOP_IMPORT_MAX_ROW_CHARS`` all of a row's text
together; both count decoded characters (bytes for binary values).

A NUL character is refused in any text or key of a row: PostgreSQL stores it in neither a
text nor a JSON column.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .errors import RowError


def limits() -> tuple[int, int]:
    """(largest cell, largest row) in characters."""
    return settings.PREFLOOP_IMPORT_MAX_CELL_CHARS, settings.PREFLOOP_IMPORT_MAX_ROW_CHARS


def check_text_length(number: int, length: int, unit: str = "line") -> None:
    """Refuse a raw line or item longer than a whole row may be, before decoding it."""
    _, row_limit = limits()
    if length > row_limit:
        raise RowError(number, _too_long("the row", length, row_limit, "ROW"), unit=unit)


def check_row(number: int, row: dict[str, Any], unit: str = "line") -> None:
    """Refuse a decoded row with a cell or a total over the limits; names the cell."""
    cell_limit, row_limit = limits()
    total = 0
    if any("\x00" in str(k) for k in row):
        raise RowError(number, "a key of the row holds a NUL character", unit=unit)
    stack: list[tuple[str, Any]] = [(f'"{k}"', v) for k, v in row.items()]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            raise RowError(number, f"{where} holds a NUL character (\\u0000)", unit=unit)
        if isinstance(value, str | bytes):
            if len(value) > cell_limit:
                raise RowError(number, _too_long(where, len(value), cell_limit, "CELL"), unit=unit)
            total += len(value)
            if total > row_limit:
                raise RowError(number, _too_long("the row", total, row_limit, "ROW"), unit=unit)
        elif isinstance(value, dict):
            if any("\x00" in str(k) for k in value):
                raise RowError(number, f"a key of {where} holds a NUL character", unit=unit)
            stack.extend((f"{where}.{k}", v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))


def _too_long(what: str, length: int, limit: int, which: str) -> str:
    return (
        f"{what} holds {length:,} characters, over the limit of {limit:,} "
        f"(PREFLOOP_IMPORT_MAX_{which}_CHARS)"
    )
