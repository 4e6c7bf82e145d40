"""schemathesis against the API's own OpenAPI schema (served at ``/api/schema/``).

Every operation of the schema is called with generated requests, as the project's lead and
as one of its annotators (token auth), against a project that has prompts, comparisons
(open, judged, gold), judgments, a round, versions and dataset jobs. Path ids are drawn from
real rows (the project's own, another project's) as well as generated, so the checks reach
past the 404. Examples are both valid and invalid for the schema.

Each response must:

- not be a server error (5xx);
- have a status code, a content type and a body that the schema documents for the operation;
- accept a request that the schema says is valid, unless it names something the server does
  not have or breaks a rule no schema can state (``REFUSED_BY_CONTENT``, ``REFUSED_FIELDS``,
  ``REFUSED_MESSAGES``): the request schemas are as strict as the API's validation.

The converse (schemathesis' negative_data_rejection: everything the schema calls invalid is
refused) is not checked: DRF coerces on purpose (617 for a text field reads as "617", true for
a number as 1.0), so it would flag DRF itself rather than the API.

Starting a round (``POST /api/projects/{project_id}/rounds/``) is called, but the generation
task it queues is stubbed out: nothing loads a model. No other API operation loads one (the
Playground and ``serve_model`` are not part of this API).

Hypothesis runs derandomized with a fixed number of examples per operation and role (25: 25
operations x 2 roles, 1,250 requests, about a minute on two quiet cores), so a failure
reproduces on the next run. The same test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import Permission
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from annotate import services
from annotate.models import Comparison, DatasetJob, Membership, Project
from tests.factories import ComparisonFactory, MembershipFactory, ProjectFactory, UserFactory
from training.models import ModelVersion, Round
from training.services import base_version
from training.services.dispatch import GENERATE_ROUND

APP = get_wsgi_application()
SCHEMA = schemathesis.openapi.from_wsgi("/api/schema/?format=json", APP)
OPERATIONS = sorted(
    (result.ok() for result in SCHEMA.get_all_operations()), key=lambda op: (op.path, op.method)
)
# per operation and role; FUZZ_EXAMPLES=200 for a longer search by hand
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ROUNDS = "/api/projects/{project_id}/rounds/"

# Requests that match the schema and may still be refused with a 400, because the value must
# name something the server has, or follow a rule no JSON schema states. Any other 400 on a
# schema-valid request means the schema is looser than the API's validation.
REFUSED_BY_CONTENT = {
    "POST /api/auth/token/": "a username and password that match",
    "POST /api/projects/{project_id}/members/": "a username that exists",
    "POST /api/projects/{project_id}/import/": "the file's rows, in the format named",
    "POST /api/projects/{project_id}/prompts/": "a prompt that does not end with the "
    "assistant's turn",
    "POST /api/projects/{project_id}/comparisons/": "the same, for the pair's prompt",
}
# Fields whose value must name something the server has: a model it can load, versions the
# project has.
REFUSED_FIELDS = {"base_model", "versions"}
# Messages about values in a small language of their own, parsed rather than patterned (the
# simulated gate's judge rule), or about two settings together (soft labels need the sigmoid
# loss).
REFUSED_MESSAGES = ("gate_judge: ", "soft_labels: needs the sigmoid loss")


def _messages(body: Any) -> list[str]:
    if isinstance(body, str):
        return [body]
    if isinstance(body, list):
        return [m for item in body for m in _messages(item)]
    if isinstance(body, dict):
        return [m for value in body.values() for m in _messages(value)]
    return []


def _excused(field: str, messages: list[str]) -> bool:
    return (
        field in REFUSED_FIELDS
        or bool(messages)
        and all(m.startswith(REFUSED_MESSAGES) for m in messages)
    )


def _refused_by_content(body: Any) -> bool:
    """Whether every part of a 400 is about a field or message above: per field of a
    serializer's answer, or the field a service message starts with (``"versions": ...``)."""
    if not isinstance(body, dict) or not body:
        return False
    if "detail" in body:
        detail = str(body["detail"])
        named = re.match(r'"(\w+)"', detail)
        return _excused(named[1] if named else "detail", [detail])
    return all(_excused(field, _messages(value)) for field, value in body.items())


def valid_requests_pass(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, less the refusals above."""
    if response.status_code == 400:
        if f"{case.method} {case.path}" in REFUSED_BY_CONTENT:
            return None
        if _refused_by_content(json.loads(response.content or b"null")):
            return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    valid_requests_pass,
]


def _judge_next(project: Project, user: Any, choice: str) -> None:
    assignment = services.next_assignment(project, user)
    assert assignment is not None
    services.submit_judgment(
        user, assignment.comparison_id, services.JudgmentInput(choice, uuid.uuid4())
    )


@pytest.fixture
def world(
    request: pytest.FixtureRequest,
    db: Any,
    settings: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict:
    """A project with every kind of row the API reads, and the ids to aim at."""
    settings.VAR_DIR = tmp_path
    # The test runs in one transaction: a request must not close its connection at its start
    # or end (Django's test client disconnects the same handlers).
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
        request.addfinalizer(lambda signal=signal: signal.connect(close_old_connections))
    queued: list[tuple[str, tuple[int, ...]]] = []
    # starting a round queues the sampling task: record it rather than load a model
    monkeypatch.setattr(
        "training.services.dispatch.enqueue", lambda name, *args: queued.append((name, args))
    )
    project = ProjectFactory(name="Fuzzed project", overlap=2)
    lead = UserFactory(username="lead")
    lead.user_permissions.add(Permission.objects.get(codename="add_project"))
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    for user, role in ((lead, Membership.Role.LEAD), (alice, None), (bob, None)):
        MembershipFactory(project=project, user=user, role=role or Membership.Role.ANNOTATOR)
    other = ProjectFactory(name="Someone else's")
    MembershipFactory(project=other, user=UserFactory(username="mallory"), role="lead")
    theirs = ComparisonFactory(project=other)

    base = base_version(project)
    finished = Round.objects.create(
        project=project, number=1, policy=base, state=Round.State.PROMOTED
    )
    v1 = ModelVersion.objects.create(
        project=project, number=1, spec="v1-dir", parent=base, trained_in=finished
    )
    # no round open, so that starting one can succeed (once)
    Round.objects.create(project=project, number=2, policy=v1, state=Round.State.REJECTED)
    pairs = [ComparisonFactory(project=project, round=1 + n % 2) for n in range(6)]
    for _ in range(3):
        _judge_next(project, alice, "left")
        _judge_next(project, bob, "right")
    _judge_next(project, lead, "tie")
    Comparison.objects.filter(pk=pairs[5].pk).update(gold_choice="a")
    # per role: the pair one holds a lease on (to judge), one's own judgments (the latest
    # undoable) and someone else's
    theirs_judgment = bob.judgments.first().pk
    own = {}
    for role, user in (("lead", lead), ("annotator", alice)):
        leased = services.next_assignment(project, user)
        own[role] = {
            "comparison_id": [leased.comparison_id] if leased else [],
            "judgment_id": [
                *user.judgments.order_by("-pk").values_list("pk", flat=True),
                theirs_judgment,
            ],
        }
    exported = tmp_path / "exports" / "done.jsonl"
    exported.parent.mkdir()
    exported.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    done = DatasetJob.objects.create(
        project=project,
        kind=DatasetJob.Kind.EXPORT,
        format="trl-plain",
        status=DatasetJob.Status.DONE,
        result_path="exports/done.jsonl",
        filename="done.jsonl",
    )
    pending = DatasetJob.objects.create(
        project=project, kind=DatasetJob.Kind.IMPORT, format="prompts"
    )
    ids = {
        "project_id": [project.pk, other.pk],
        "comparison_id": [c.pk for c in pairs] + [theirs.pk],
        "job_id": [done.pk, pending.pk],
        "username": ["lead", "alice", "bob", "mallory"],
    }
    return {
        "users": {"lead": lead, "annotator": alice},
        "ids": ids,
        "own": own,
        "queued": queued,
    }


def _path_parameters(operation: Any, ids: dict[str, list[Any]]) -> st.SearchStrategy:
    """Per path parameter: mostly one of the real ids (the first, this project, most often),
    sometimes one left to schemathesis (``None``)."""
    names = [p.name for p in operation.path_parameters]

    def choices(name: str) -> st.SearchStrategy:
        real = ids.get(name, [])
        if not real:
            return st.none()
        return st.sampled_from([real[0], real[0], *real, None])

    return st.fixed_dictionaries({name: choices(name) for name in names}).map(
        lambda chosen: {k: v for k, v in chosen.items() if v is not None}
    )


@pytest.mark.slow
@pytest.mark.parametrize("role", ["lead", "annotator"])
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: f"{op.method.upper()} {op.path}")
def test_the_api_answers_every_request_as_its_schema_says(world, operation, role):
    user = world["users"][role]
    token = Token.objects.create(user=user).key
    ids = {**world["ids"], "judgment_id": world["own"][role]["judgment_id"]}
    ids["comparison_id"] = [*world["own"][role]["comparison_id"], *ids["comparison_id"]]
    cases = _path_parameters(operation, ids).flatmap(
        lambda path: st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path),
            operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=path),
        )
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        headers = {"Authorization": f"Token {token}"}
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)

    check()
    if (operation.method, operation.path, role) == ("post", ROUNDS, "lead"):
        # the lead did start a round (once; then it was open): its sampling task was recorded
        assert [name for name, _ in world["queued"]] == [GENERATE_ROUND]
