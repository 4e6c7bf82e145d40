"""Token authentication in one look-up.

DRF's ``TokenAuthentication`` builds an ORM query with a join on every request; the
annotation loop sends two requests per judgment, so the same check here reads the user by
their token key with one plain statement. Its answers are DRF's: an unknown key and an inactive
user are 401s.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from annotate.prepared import Columns

_USER = Columns(get_user_model())


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {_USER.select('u')} FROM {_USER.model._meta.db_table} u"  # noqa: S608 (the user model's table and columns)
                " JOIN authtoken_token t ON t.user_id = u.id WHERE t.key = %s",
                [key],
            )
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user = _USER.load(row)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, Token(key=key, user=user)
