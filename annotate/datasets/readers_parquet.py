"""Reading Parquet files a batch at a time, with the decoded size caps of ``readers_limits``
checked on the Arrow columns before a batch becomes Python objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from annotate.errors import InvalidInput

from .errors import RowError
from .readers_limits import check_text_length, limits

_PARQUET_BATCH = 1000
# Decoded bytes a Parquet batch aims at.
_PARQUET_BATCH_BYTES = 64 * 1024 * 1024


def read_parquet(source: IO[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a Parquet file, in batches small enough that their decoded text stays bounded;
    every text column is measured before a batch becomes Python objects."""
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput(f"The file is not a Parquet file ({exc}).") from None
    number = 0
    for batch in parquet.iter_batches(batch_size=_parquet_batch_size(parquet)):
        _check_parquet_batch(batch, number)
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _parquet_batch_size(parquet: pq.ParquetFile) -> int:
    """Rows per batch: at most _PARQUET_BATCH, fewer when the row groups' decoded size says
    rows are large, so a batch holds about _PARQUET_BATCH_BYTES."""
    meta = parquet.metadata
    widest = 1.0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if group.num_rows:
            widest = max(widest, group.total_byte_size / group.num_rows)
    return max(1, min(_PARQUET_BATCH, int(_PARQUET_BATCH_BYTES // widest)))


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _check_parquet_batch(batch: pa.RecordBatch, before: int) -> None:
    """Refuse a batch whose text columns hold a cell or a row over the limits."""
    cell_limit, row_limit = limits()
    totals = None
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if not _is_text(column.type):
            continue
        lengths = pc.fill_null(pc.binary_length(column), 0)
        longest = pc.max(lengths).as_py() or 0
        if longest > cell_limit:
            index = pc.index(lengths, longest).as_py()
            raise RowError(
                before + index + 1,
                f'"{name}" holds {longest:,} bytes, over the limit of {cell_limit:,} '
                "(PREFLOOP_IMPORT_MAX_CELL_CHARS)",
                unit="row",
            )
        totals = lengths if totals is None else pc.add(totals, lengths)
    if totals is not None and len(totals):
        largest = pc.max(totals).as_py() or 0
        if largest > row_limit:
            index = pc.index(totals, largest).as_py()
            check_text_length(before + index + 1, largest, unit="row")
