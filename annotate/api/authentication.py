"""Token authentication in one look-up, or in none of its own.

DRF's ``TokenAuthentication`` builds an ORM query with a join on every request; here the user
is read by their token key with one plain statement (``annotate.tokens``). Its answers are
DRF's: an unknown key and an inactive user are 401s.

``TokenInFirstStatement`` is for the annotation loop's views (next and submit): it hands the
view the key unchecked (``annotate.tokens.TokenKey``), and the service's first statement
checks it while it reads what the request needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from annotate import tokens
from annotate.errors import Unauthenticated


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        try:
            user = tokens.user_for(key)
        except Unauthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        return user, Token(key=key, user=user)


class TokenInFirstStatement(TokenAuthentication):
    """For views that check the token inside their first statement, under
    :func:`token_checked_first`. A request that does not run the view's body (OPTIONS, a
    method the view does not take) has its token checked at once, as everywhere else."""

    defer = False

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        view = (request.parser_context or {}).get("view")
        method = (request.method or "").lower()
        self.defer = method != "options" and hasattr(view, method)
        return super().authenticate(request)

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if not self.defer:
            return super().authenticate_credentials(key)
        return tokens.TokenKey(key), key


@contextmanager
def token_checked_first(request: Request) -> Iterator[None]:
    """Runs a view whose user may be an unchecked token: a wrong token answers 401 whatever
    else the view found wrong (a bad body, an unknown pair), as it would have before the view
    ran."""
    try:
        yield
    except Unauthenticated as exc:
        raise exceptions.AuthenticationFailed(exc.message) from None
    except Exception:
        if isinstance(request.user, tokens.TokenKey):
            try:
                request.user = tokens.user_for(request.user.key)
            except Unauthenticated as exc:
                raise exceptions.AuthenticationFailed(exc.message) from None
        raise
