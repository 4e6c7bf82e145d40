"""Index operations for large tables that leave them writable while they run.

On PostgreSQL an index is built and dropped CONCURRENTLY (the migration must be non-atomic):
annotators keep judging while a big table is indexed. Other databases get the plain operation;
SQLite locks the file for any schema change anyway.

``AddIndexWithoutLocking`` takes an optional ``postgres_index``: the same index as built on
PostgreSQL, where a descending key needs NULLS LAST to serve a query that orders NULLS LAST
(SQLite sorts NULL lowest, so its DESC keeps them last already, and it cannot spell NULLS LAST
in an index). The migration state keeps ``index``; both share a name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import models
from django.db.migrations import AddIndex, RemoveIndex


def _postgres(schema_editor: Any) -> bool:
    return bool(schema_editor.connection.vendor == "postgresql")


class AddIndexWithoutLocking(AddIndexConcurrently):
    def __init__(
        self, model_name: str, index: models.Index, postgres_index: models.Index | None = None
    ) -> None:
        super().__init__(model_name, index)
        self.postgres_index = postgres_index

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        name, args, kwargs = super().deconstruct()
        if self.postgres_index is not None:
            kwargs["postgres_index"] = self.postgres_index
        return name, args, kwargs

    def describe(self) -> str:
        return f"Create index {self.index.name} on {self.model_name} (concurrently on PostgreSQL)"

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _postgres(schema_editor):
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)
            return
        self._ensure_not_in_transaction(schema_editor)
        model = to_state.apps.get_model(app_label, self.model_name)
        if self.allow_migrate_model(schema_editor.connection.alias, model):
            schema_editor.add_index(model, self.postgres_index or self.index, concurrently=True)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _postgres(schema_editor):
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
            return
        super().database_backwards(app_label, schema_editor, from_state, to_state)


class RemoveIndexWithoutLocking(RemoveIndexConcurrently):
    def describe(self) -> str:
        return f"Remove index {self.name} from {self.model_name} (concurrently on PostgreSQL)"

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _postgres(schema_editor):
            RemoveIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)
            return
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        if not _postgres(schema_editor):
            RemoveIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
            return
        super().database_backwards(app_label, schema_editor, from_state, to_state)
