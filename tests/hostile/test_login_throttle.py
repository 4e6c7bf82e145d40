"""Failed logins are throttled per username (strictly) and per address (generously): 429."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from ..factories import UserFactory

FORM, TOKEN, ADMIN = "/accounts/login/", "/api/auth/token/", "/admin/login/"


def attempt(where: str, username: str, password: str, address: str = "10.0.0.1"):
    if where == TOKEN:
        return APIClient(REMOTE_ADDR=address).post(
            TOKEN, {"username": username, "password": password}, format="json"
        )
    return Client(REMOTE_ADDR=address).post(where, {"username": username, "password": password})


@pytest.fixture
def limits(settings):
    settings.PREFLOOP_LOGIN_FAILURES_PER_USER = 5
    settings.PREFLOOP_LOGIN_FAILURES_PER_ADDRESS = 12
    return settings


@pytest.mark.parametrize("where", [FORM, TOKEN, ADMIN])
def test_it_blocks_a_username_after_repeated_failures(team, limits, where):
    for _ in range(5):
        assert attempt(where, "alice", "wrong").status_code in (200, 400)
    r = attempt(where, "alice", "pw")
    assert r.status_code == 429
    assert int(r["Retry-After"]) > 0
    # From another address too: the account is what is guessed at.
    assert attempt(where, "alice", "pw", address="10.9.9.9").status_code == 429
    # Other people can still log in.
    assert attempt(where, "bob", "pw").status_code in (200, 302)


def test_failures_on_one_endpoint_count_on_the_others(team, limits):
    for where in (FORM, TOKEN, ADMIN, FORM, TOKEN):
        attempt(where, "alice", "wrong")
    r = attempt(TOKEN, "alice", "pw")
    assert r.status_code == 429
    assert r.json() == {"detail": "Too many failed logins; try again in a few minutes."}
    assert attempt(FORM, "alice", "pw").status_code == 429


def test_it_blocks_an_address_that_tries_many_usernames(db, limits):
    for i in range(12):
        attempt(FORM, f"guess{i}", "wrong", address="10.6.6.6")
    UserFactory(username="victim")
    assert attempt(FORM, "victim", "pw", address="10.6.6.6").status_code == 429
    assert attempt(FORM, "victim", "pw", address="10.7.7.7").status_code == 302


def test_many_users_logging_in_from_one_address_are_never_blocked(db, limits):
    for i in range(40):
        UserFactory(username=f"annotator{i}")
    for i in range(40):
        r = attempt(TOKEN, f"annotator{i}", "pw", address="127.0.0.1")
        assert r.status_code == 200, (i, r.content)
    # A few typos among them do not block the address either.
    for i in range(5):
        attempt(FORM, f"annotator{i}", "typo", address="127.0.0.1")
    assert attempt(FORM, "annotator39", "pw", address="127.0.0.1").status_code == 302


def test_the_window_ends(team, limits, monkeypatch):
    import annotate.throttle as throttle

    for _ in range(5):
        attempt(TOKEN, "alice", "wrong")
    assert attempt(TOKEN, "alice", "pw").status_code == 429
    later = throttle.time.time() + limits.PREFLOOP_LOGIN_WINDOW_SECONDS
    monkeypatch.setattr(throttle.time, "time", lambda: later)
    assert attempt(TOKEN, "alice", "pw").status_code == 200
