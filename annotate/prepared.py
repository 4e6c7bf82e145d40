"""Querysets compiled once and run many times with other values.

Building and compiling a queryset costs a millisecond or more of Python; running it on an
index costs a fraction of that. The queue's hot queries are built with the ORM (so that their
ORDER BY is the text of the expression indexes they walk, see ``annotate.models.queue_index``),
compiled once per database and shape with placeholder values, and then run as plain SQL with
the request's values in the placeholders' places.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

# Placeholder values: numbers and a time that no query uses as a constant, so that each compiled
# parameter can be told apart from the query's own constants. The numbers are positive and
# within a 32-bit integer column's range: Django compiles an out-of-range lookup to no SQL.
_INT_BASE = 2_104_729_003
_TIME = datetime(1901, 2, 3, 4, 5, 6, 789_012, tzinfo=UTC)


class Prepared:
    """``build(**placeholders)`` returns a queryset; ``sql_with_params(**values)`` its SQL with
    these values in the placeholders' places.

    ``ints`` and ``times`` name the integer and datetime arguments of ``build``. Each
    placeholder must reach the SQL as a parameter of its own (a filter on a column, not part of
    an expression that folds it); ``compile`` checks that every one of them does.
    """

    def __init__(
        self,
        build: Callable[..., QuerySet[Any, Any]],
        ints: Sequence[str] = (),
        times: Sequence[str] = (),
    ) -> None:
        self.build = build
        self.ints = tuple(ints)
        self.times = tuple(times)
        self._compiled: dict[str, tuple[str, list[tuple[str | None, Any]]]] = {}

    def _placeholders(self) -> dict[str, Any]:
        values: dict[str, Any] = {n: _INT_BASE - i for i, n in enumerate(self.ints)}
        if len(self.times) > 1:
            raise ValueError("one datetime placeholder per query")
        values.update(dict.fromkeys(self.times, _TIME))
        return values

    def compile(self) -> tuple[str, list[tuple[str | None, Any]]]:
        """(sql, [(placeholder name or None, constant)]) for the current database."""
        vendor = connection.vendor
        if vendor not in self._compiled:
            placeholders = self._placeholders()
            sql, params = self.build(**placeholders).query.sql_with_params()
            by_value: dict[Any, str] = {v: n for n, v in placeholders.items() if n in self.ints}
            adapted_time = connection.ops.adapt_datetimefield_value(_TIME)
            slots: list[tuple[str | None, Any]] = []
            found: set[str] = set()
            for param in params:
                if param == adapted_time and self.times:
                    slots.append((self.times[0], None))
                    found.add(self.times[0])
                elif isinstance(param, int) and not isinstance(param, bool) and param in by_value:
                    slots.append((by_value[param], None))
                    found.add(by_value[param])
                else:
                    slots.append((None, param))
            missing = set(placeholders) - found
            if missing:
                raise ValueError(f"placeholders not in the SQL: {', '.join(sorted(missing))}")
            self._compiled[vendor] = (sql, slots)
        return self._compiled[vendor]

    def sql_with_params(self, **values: Any) -> tuple[str, list[Any]]:
        sql, slots = self.compile()
        params = []
        for name, constant in slots:
            if name is None:
                params.append(constant)
            elif name in self.times:
                params.append(to_db_time(values[name]))
            else:
                params.append(values[name])
        return sql, params


def to_db_time(value: datetime) -> Any:
    """A datetime as a plain cursor's parameter on this database."""
    return connection.ops.adapt_datetimefield_value(value)


def from_db_time(value: Any) -> datetime:
    """A datetime column read by a plain cursor: aware on PostgreSQL, naive UTC or text on
    SQLite."""
    if not isinstance(value, datetime):
        value = datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


class Columns:
    """A model's concrete fields as columns of a hand-written SELECT, and model instances
    built from the rows it returns.

    What ``Model.objects.raw()`` does for each query (map the cursor's columns to fields, look
    up the database's converters) is done once per database here; the instance is built as
    the ORM builds one it loaded.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.names = tuple(f.attname for f in self.fields)
        self._converters: dict[str, list[tuple[int, list[Any], Any]]] = {}

    def select(self, table_alias: str) -> str:
        """The columns, in the model's order, for a SELECT list where the model's table is
        ``table_alias``."""
        quote = connection.ops.quote_name
        return ", ".join(f"{table_alias}.{quote(f.column)}" for f in self.fields)

    def _converters_here(self) -> list[tuple[int, list[Any], Any]]:
        vendor = connection.vendor
        if vendor not in self._converters:
            found = []
            for i, f in enumerate(self.fields):
                col = f.get_col(self.model._meta.db_table)
                converters = connection.ops.get_db_converters(col) + f.get_db_converters(connection)
                if converters:
                    found.append((i, converters, col))
            self._converters[vendor] = found
        return self._converters[vendor]

    def load(self, values: Sequence[Any]) -> Any:
        """The instance from the row's first ``len(self.names)`` values."""
        values = list(values[: len(self.names)])
        for i, converters, col in self._converters_here():
            for convert in converters:
                values[i] = convert(values[i], col, connection)
        return self.model.from_db(connection.alias, self.names, values)
