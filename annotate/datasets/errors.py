from __future__ import annotations

from annotate.errors import InvalidInput


class RowError(InvalidInput):
    """A bad row: the message starts with where it is, e.g. ``line 812: "chosen" is missing``."""

    def __init__(self, line: int, message: str, unit: str = "line") -> None:
        super().__init__(f"{unit} {line}: {message}")
        self.line = line
        self.unit = unit
        self.detail = message


class TooLarge(InvalidInput):
    status_code = 413
