"""A database that cannot be reached (restarting, failing over) answers 503, not 500.

The API's exception handler (``annotate.api.errors``) answers its own views with JSON; this
middleware covers the pages: a short page, or JSON for a client that asks for it, with
Retry-After. Django closes a connection that failed at the end of the request, and
``CONN_HEALTH_CHECKS`` makes the next request open a new one, so the app recovers by itself
once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

MESSAGE = "The database is unavailable for a moment: try again shortly."
# Seconds a client is asked to wait before retrying.
RETRY_AFTER_SECONDS = 2

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Unavailable</title></head>
<body><h1>Unavailable for a moment</h1><p>{MESSAGE}</p></body></html>
"""


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError | InterfaceError)


def unavailable_response(request: HttpRequest) -> HttpResponse:
    response: HttpResponse
    if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
        response = JsonResponse({"detail": MESSAGE}, status=503)
    else:
        response = HttpResponse(PAGE, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_unavailable(exception):
            return None
        log.warning("Database unavailable on %s: %s", request.path, exception)
        return unavailable_response(request)
