"""Login throttling: the login form, the API's token endpoint and the admin login.

Failed logins are counted in Django's cache over a fixed window, under two keys: the
username tried (strict: a password guesser gets a handful of tries per account) and the
client's address (generous: many people behind one address, or a load test of many users on
127.0.0.1, are never blocked by each other). Only failures count, so successful logins never
use up a budget. Once either count reaches its limit, the login endpoints answer 429 before
checking any password, until the window ends.

The address is ``REMOTE_ADDR``: behind a reverse proxy, have the proxy set it (for example
gunicorn's ``--forwarded-allow-ips``), since a header the client writes cannot be trusted.

Settings: ``PREFLOOP_LOGIN_FAILURES_PER_USER``, ``PREFLOOP_LOGIN_FAILURES_PER_ADDRESS`` and
``PREFLOOP_LOGIN_WINDOW_SECONDS`` (see ``annotate.settings``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

MESSAGE = "Too many failed logins; try again in a few minutes."


def _window() -> tuple[int, int]:
    """(index of the current window, seconds until it ends)."""
    length = settings.PREFLOOP_LOGIN_WINDOW_SECONDS
    now = time.time()
    return int(now // length), int(length - now % length) + 1


def _keys(username: str | None, address: str | None) -> list[tuple[str, int]]:
    window, _ = _window()
    keys = []
    if username:
        digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        keys.append((f"login-fail:u:{digest}:{window}", settings.PREFLOOP_LOGIN_FAILURES_PER_USER))
    if address:
        keys.append(
            (f"login-fail:a:{address}:{window}", settings.PREFLOOP_LOGIN_FAILURES_PER_ADDRESS)
        )
    return keys


def record_failure(username: str | None, address: str | None) -> None:
    _, remaining = _window()
    for key, _limit in _keys(username, address):
        cache.add(key, 0, timeout=remaining)
        try:
            cache.incr(key)
        except ValueError:
            # The entry expired between add and incr: this failure opens the next window.
            cache.add(key, 1, timeout=remaining)


def is_blocked(username: str | None, address: str | None) -> bool:
    return any(int(cache.get(key) or 0) >= limit for key, limit in _keys(username, address))


def client_address(request: Any) -> str | None:
    meta = getattr(request, "META", None) or {}
    address = meta.get("REMOTE_ADDR")
    return str(address) if address else None


@receiver(user_login_failed, dispatch_uid="annotate-throttle-login-failed")
def _on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any):
    username = credentials.get("username")
    record_failure(str(username) if username else None, client_address(request))


def _login_paths() -> set[str]:
    return {reverse("login"), reverse("api-token"), reverse("admin:login")}


def _posted_username(request: HttpRequest) -> str | None:
    """The username a login request names, from a form or a JSON body; None if unreadable.

    Raises:
        RequestDataTooBig: the body is over DATA_UPLOAD_MAX_MEMORY_SIZE.
    """
    try:
        if request.content_type == "application/json":
            data = json.loads(request.body or b"{}")
            value = data.get("username") if isinstance(data, dict) else None
        else:
            value = request.POST.get("username")
    except (ValueError, RecursionError):
        # The view answers a malformed body itself (400).
        return None
    return str(value) if isinstance(value, str | int) else None


class LoginThrottleMiddleware:
    """Answers 429 to a login attempt once its username or address is over its limit."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.paths: set[str] | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            if self.paths is None:
                self.paths = _login_paths()
            if request.path_info in self.paths:
                try:
                    username = _posted_username(request)
                except RequestDataTooBig:
                    return self._respond(request, "The request body is too large.", 413)
                if is_blocked(username, client_address(request)):
                    _, remaining = _window()
                    response = self._respond(request, MESSAGE, 429)
                    response["Retry-After"] = str(remaining)
                    return response
        return self.get_response(request)

    @staticmethod
    def _respond(request: HttpRequest, message: str, status: int) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            return JsonResponse({"detail": message}, status=status)
        return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
