"""The loop's fields live with the training app and reach the project API through annotate's
extension point; judgments reach the loop through annotate's ``judgment_recorded`` signal."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from annotate import services as annotate_services
from annotate.extensions import judgment_recorded
from annotate.models import Judgment, Project
from tests.conftest import Team, api_for
from training.models import ProjectLoop

pytestmark = pytest.mark.django_db


def test_it_shows_the_loop_fields_on_the_project_resource(team: Team) -> None:
    ProjectLoop.store(team.project, base_model="demo", settings={"k": 3})
    body = api_for(team.lead).get(f"/api/projects/{team.project.pk}/").json()
    assert body["base_model"] == "demo"
    assert body["loop_settings"] == {"k": 3}


def test_it_reads_defaults_without_writing_a_row(team: Team) -> None:
    body = api_for(team.alice).get(f"/api/projects/{team.project.pk}/").json()
    assert body["base_model"] == "demo"
    assert body["loop_settings"] == {}
    assert not ProjectLoop.objects.filter(project=team.project).exists()


def test_it_creates_a_project_with_its_loop_fields(team: Team) -> None:
    api = api_for(team.lead)
    r = api.post(
        "/api/projects/",
        {"name": "New", "base_model": "demo", "loop_settings": {"trigger": "manual"}},
        format="json",
    )
    assert r.status_code == 201, r.json()
    project = Project.objects.get(pk=r.json()["id"])
    assert ProjectLoop.of(project).settings == {"trigger": "manual"}


def test_it_writes_nothing_when_a_loop_field_is_invalid(team: Team) -> None:
    api = api_for(team.lead)
    before = Project.objects.count()
    r = api.post("/api/projects/", {"name": "Bad", "loop_settings": {"k": 1}}, format="json")
    assert r.status_code == 400 and "loop_settings" in r.json()
    assert Project.objects.count() == before
    url = f"/api/projects/{team.project.pk}/"
    r = api.patch(url, {"name": "Renamed", "base_model": "/no/such/dir"}, format="json")
    assert r.status_code == 400 and "base_model" in r.json()
    team.project.refresh_from_db()
    assert team.project.name == "Team project"
    assert not ProjectLoop.objects.filter(project=team.project).exists()


def test_it_rejects_an_overlong_base_model_naming_the_field(team: Team) -> None:
    url = f"/api/projects/{team.project.pk}/"
    r = api_for(team.lead).patch(url, {"base_model": "x" * 501}, format="json")
    assert r.status_code == 400
    assert "base_model" in r.json()


def test_it_documents_the_loop_fields_in_the_schema(team: Team) -> None:
    schema = api_for(team.lead).get("/api/schema/?format=json").json()
    fields = schema["components"]["schemas"]["Project"]["properties"]
    assert fields["base_model"]["type"] == "string"
    assert fields["loop_settings"]["type"] == "object"
    settings = fields["loop_settings"]["properties"]
    assert settings["pairing"]["enum"] == ["auto", "random", "most_different", "best_vs_worst"]
    assert settings["soft_labels"] == {"type": "boolean", "default": False}
    assert settings["replay_share"]["maximum"] == 1.0


def test_it_sends_judgment_recorded_once_per_new_judgment(team: Team) -> None:
    team.pairs(1)
    received: list[Judgment] = []

    def receiver(sender: Any, judgment: Judgment, **kwargs: Any) -> None:
        received.append(judgment)

    judgment_recorded.connect(receiver, sender=Judgment, dispatch_uid="test-recorded")
    try:
        assignment = annotate_services.next_assignment(team.project, team.alice)
        assert assignment is not None
        data = annotate_services.JudgmentInput(choice="left", client_id=uuid.uuid4())
        judgment, created = annotate_services.submit_judgment(
            team.alice, assignment.comparison_id, data
        )
        replay, again = annotate_services.submit_judgment(
            team.alice, assignment.comparison_id, data
        )
    finally:
        judgment_recorded.disconnect(dispatch_uid="test-recorded", sender=Judgment)
    assert created and not again
    assert received == [judgment]


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_the_fields_and_back() -> None:
    executor = MigrationExecutor(connection)
    before = [("annotate", "0002_datasetjob"), ("training", "0001_initial")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    project = old.get_model("annotate", "Project").objects.create(
        name="Old", slug="old", export_salt="s", base_model="/models/x", loop_settings={"k": 3}
    )

    executor.loader.build_graph()
    after = executor.loader.graph.leaf_nodes()
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    loop = new.get_model("training", "ProjectLoop").objects.get(project_id=project.pk)
    assert (loop.base_model, loop.settings) == ("/models/x", {"k": 3})

    executor.loader.build_graph()
    executor.migrate(before)
    back = executor.loader.project_state(before).apps.get_model("annotate", "Project")
    restored = back.objects.get(pk=project.pk)
    assert (restored.base_model, restored.loop_settings) == ("/models/x", {"k": 3})

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_the_migration_drops_the_retired_eval_holdout_setting() -> None:
    executor = MigrationExecutor(connection)
    before = [("training", "0003_copy_project_loop"), ("annotate", "0005_prompt_split_dev")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    project = old.get_model("annotate", "Project").objects.create(
        name="Old", slug="old", export_salt="s"
    )
    old.get_model("training", "ProjectLoop").objects.create(
        project_id=project.pk, settings={"k": 3, "eval_holdout": 0.1}
    )

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert ProjectLoop.objects.get(project_id=project.pk).settings == {"k": 3}
