"""The API's JSON parser: DRF's, with nesting too deep for the decoder answered as a 400."""

from __future__ import annotations

from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class BoundedJSONParser(JSONParser):
    """Strict JSON (no NaN or Infinity, as DRF's own) that also refuses deep nesting.

    The standard decoder recurses once per level, so a body of 100,000 ``[`` exhausts the
    stack; that is the sender's error, not the server's.
    """

    def parse(
        self, stream: IO[bytes], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the JSON is nested too deeply.") from None
