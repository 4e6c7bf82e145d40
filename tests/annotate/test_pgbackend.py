"""The PostgreSQL backend skips the health check of a connection that answered a request
moments ago, and checks any other before a request uses it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connections
from django.test.utils import override_settings

connection = connections["default"]
pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the PostgreSQL backend's health check"
)


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch, transactional_db: Any) -> list[bool]:
    """The health checks the connection runs from now on (outside a test transaction, which
    Django's own checks between requests would end)."""
    ran: list[bool] = []
    usable = type(connection).is_usable

    def counting(self: Any) -> bool:
        ran.append(True)
        return bool(usable(self))

    monkeypatch.setattr(type(connection), "is_usable", counting)
    monkeypatch.setattr(connection, "health_check_enabled", True)
    # a connection that has not served a request yet
    connection.ensure_connection()
    connection.answered_at = float("-inf")
    connection.health_check_done = False
    return ran


def _request(statement: str = "SELECT 1") -> None:
    """What a request does to the connection: Django's check when it starts, a statement (the
    health check runs before the first cursor), the check when it ends."""
    connection.close_if_unusable_or_obsolete()
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close_if_unusable_or_obsolete()


def test_a_connection_that_just_answered_is_not_checked_again(checks: list[bool]) -> None:
    _request()
    assert len(checks) == 1  # never answered a request: checked
    _request()
    _request()
    assert len(checks) == 1


@override_settings(PREFLOOP_DB_CHECK_DELAY=0)
def test_with_no_delay_every_request_checks_its_connection(checks: list[bool]) -> None:
    _request()
    _request()
    assert len(checks) == 2


def test_a_connection_idle_longer_than_the_delay_is_checked(checks: list[bool]) -> None:
    _request()
    connection.answered_at -= 60
    _request()
    assert len(checks) == 2


def test_a_request_that_did_not_use_the_connection_does_not_vouch_for_it(
    checks: list[bool],
) -> None:
    connection.close_if_unusable_or_obsolete()
    connection.close_if_unusable_or_obsolete()  # a request without statements
    _request()
    assert len(checks) == 1
