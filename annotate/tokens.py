"""API tokens: the user a token names, read in one statement or inside another one.

Every API request but the annotation loop's checks its token before the view runs
(``annotate.api.authentication.TokenAuthentication``). The loop's two requests, next and
submit, are most of the API's traffic and each does one look-up first anyway: there the token
travels unchecked as a :class:`TokenKey`, and the service's first statement reads the user by
the token together with what it reads for the request (``annotate.services``), so that a request
costs one round trip to the database less. A wrong token, or an inactive user's, is refused
before anything else is answered or written (:class:`Unauthenticated`, a 401).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from .errors import Unauthenticated
from .prepared import Columns

USER = Columns(get_user_model())
# The user of the token whose key is this statement's parameter, as columns of ``u``: "tu"
# joins it to another statement's rows (no row when the key is wrong).
USER_BY_TOKEN = (
    f"SELECT {USER.select('u')} FROM {USER.model._meta.db_table} u"  # noqa: S608 (the user model's table and columns)
    " JOIN authtoken_token t ON t.user_id = u.id WHERE t.key = %s"
)


class TokenKey:
    """A token the request sent, not checked yet: it stands for the user until a service's
    first statement reads the user by it (:func:`user_from_row`) or :func:`resolve` does."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return "TokenKey(...)"


def user_from_row(row: Sequence[Any] | None) -> Any:
    """The user from the user columns (:data:`USER`) at the start of ``row``.

    Raises:
        Unauthenticated: no row, or no user in it (the token is wrong), or the user is
            inactive.
    """
    if row is None or row[0] is None:
        raise Unauthenticated("Invalid token.")
    user = USER.load(row)
    if not user.is_active:
        raise Unauthenticated("User inactive or deleted.")
    return user


def user_for(key: str) -> Any:
    """The active user of the token ``key``, in one statement; Unauthenticated otherwise."""
    with connection.cursor() as cursor:
        cursor.execute(USER_BY_TOKEN, [key])
        return user_from_row(cursor.fetchone())


def resolve(user: Any) -> Any:
    """``user`` itself, or the user a :class:`TokenKey` names."""
    return user_for(user.key) if isinstance(user, TokenKey) else user
