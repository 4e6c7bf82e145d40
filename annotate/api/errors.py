"""Every API error is JSON: service errors keep their status, a body over
DATA_UPLOAD_MAX_MEMORY_SIZE is a 413, a database that cannot be reached (restarting, failing
over) a 503 the client may retry, anything else is a JSON 500."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from annotate.errors import ServiceError
from annotate.unavailable import MESSAGE, RETRY_AFTER_SECONDS, is_unavailable

log = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response({"detail": exc.message}, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response(
            {"detail": f"The request body is too large: at most {limit} bytes are read."},
            status=413,
        )
    if is_unavailable(exc):
        # see annotate.unavailable: the next request reconnects once the server is back
        log.warning("Database unavailable: %s", exc)
        return Response(
            {"detail": MESSAGE},
            status=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("Unhandled API error", exc_info=exc)
        return Response({"detail": "Internal server error."}, status=500)
    return response
