"""Token authentication in one look-up.

DRF's ``TokenAuthentication`` builds an ORM query with a join on every request; the
annotation loop sends two requests per judgment, so the same check here reads the user by
their token key with one plain statement. Its answers are DRF's: an unknown key and an inactive
user are 401s.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token


class TokenAuthentication(authentication.TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        model = get_user_model()
        users = model.objects.raw(
            f"SELECT u.* FROM {model._meta.db_table} u"  # noqa: S608 (the user model's table)
            " JOIN authtoken_token t ON t.user_id = u.id WHERE t.key = %s",
            [key],
        )
        user = next(iter(users), None)
        if user is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, Token(key=key, user=user)
