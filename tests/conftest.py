"""Shared fixtures: a project with a lead, two annotators and an outsider."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from annotate.models import Comparison, Membership, Project

from .factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory


def on_postgres() -> bool:
    return os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """`services` tests need PostgreSQL and Redis: .ci/run points them there."""
    if on_postgres():
        return
    skip = pytest.mark.skip(reason="needs DATABASE_URL=postgres://... (run by .ci/run)")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # The production hasher is slow on purpose; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _model_roots(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests keep their tiny models under pytest's temporary directory, and name hub ids of a
    # made-up organisation that nothing downloads.
    settings.PREFLOOP_MODEL_ROOTS = [str(tmp_path_factory.getbasetemp())]
    settings.PREFLOOP_HUB_ALLOWLIST = ["org/*"]


@pytest.fixture(autouse=True)
def _private_cache(settings: Any) -> None:
    # Login failures counted by one test (or an earlier run) must not block another.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    from django.core.cache import cache

    cache.clear()


@dataclass
class Team:
    project: Project
    lead: Any
    alice: Any
    bob: Any
    outsider: Any

    def pairs(self, n: int) -> list[Comparison]:
        return [ComparisonFactory(project=self.project) for _ in range(n)]


@pytest.fixture
def team(db: Any) -> Team:
    project = ProjectFactory(name="Team project", overlap=1)
    lead = UserFactory(username="lead")
    lead.user_permissions.add(Permission.objects.get(codename="add_project"))
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    outsider = UserFactory(username="mallory")
    MembershipFactory(project=project, user=lead, role=Membership.Role.LEAD)
    MembershipFactory(project=project, user=alice)
    MembershipFactory(project=project, user=bob)
    # The outsider leads a project of their own, to check it stays theirs.
    other = ProjectFactory(name="Other project")
    MembershipFactory(project=other, user=outsider, role=Membership.Role.LEAD)
    return Team(project=project, lead=lead, alice=alice, bob=bob, outsider=outsider)


def api_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client
