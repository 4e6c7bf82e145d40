"""base_model names only models under the model roots or allowed hub ids, and stays fixed
under trained versions unless the lead starts a new chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.model_roots import REFUSED
from training.models import ModelVersion, ProjectLoop
from training.services import base_version, serving_version
from training.services.base_chain import has_trained_versions

from ..conftest import api_for
from ..factories import ProjectFactory


@pytest.fixture
def roots(settings, tmp_path):
    """A model root holding one model directory and one GGUF file, and a directory outside."""
    root = tmp_path / "root"
    (root / "good").mkdir(parents=True)
    (root / "good" / "config.json").write_text("{}")
    (root / "small.gguf").write_bytes(b"GGUF")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (root / "link").symlink_to(outside)
    settings.PREFLOOP_MODEL_ROOTS = [str(root)]
    settings.PREFLOOP_HUB_ALLOWLIST = ["allowed-org/*", "solo/model"]
    settings.VAR_DIR = tmp_path / "var"
    return root


def patch(team, value, **extra):
    return api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {"base_model": value, **extra}, format="json"
    )


@pytest.mark.parametrize(
    "spec",
    ["good", "small.gguf", None, "allowed-org/any-model", "solo/model", "demo"],
)
def test_it_accepts_models_under_the_roots_and_allowed_hub_ids(team, roots, spec):
    value = {"good": str(roots / "good"), "small.gguf": str(roots / "small.gguf")}.get(spec, spec)
    if spec is None:
        value = str(roots / "other" / ".." / "good")
    r = patch(team, value)
    assert r.status_code == 200, r.content
    assert ProjectLoop.of(team.project).base_model == value


@pytest.mark.parametrize(
    "spec",
    [
        "/etc",
        "..",
        "/no/such/dir",
        "{root}/missing",
        "{root}/../outside",
        "{root}/link",
        "{root}/missing.gguf",
        "someone/else",
        "solo/model-2",
        "/tmp/" + "x" * 300,
        "a\x00b",
    ],
)
def test_it_refuses_anything_else_with_one_message(team, roots, spec):
    r = patch(team, spec.format(root=roots))
    assert r.status_code == 400, r.content
    assert r.json()["base_model"] == [REFUSED]


def test_it_refuses_another_projects_versions(team, roots, settings):
    settings.PREFLOOP_MODEL_ROOTS = [str(roots), str(settings.VAR_DIR)]
    other = ProjectFactory(name="Other one")
    version_dir = Path(settings.VAR_DIR) / "models" / other.slug / "v1"
    version_dir.mkdir(parents=True)
    (version_dir / "config.json").write_text("{}")
    r = patch(team, str(version_dir))
    assert r.status_code == 400
    assert r.json()["base_model"] == [REFUSED]


def test_it_refuses_a_trained_version_anywhere(team, roots):
    (roots / "good" / "prefloop_version.json").write_text("{}")
    r = patch(team, str(roots / "good"))
    assert r.json()["base_model"] == [REFUSED]


def test_it_refuses_the_same_on_the_loop_page(team, roots, client):
    client.force_login(team.lead)
    r = client.post(
        f"/projects/{team.project.pk}/loop/settings/",
        {"base_model": "/etc", "loop_settings": "{}"},
        follow=True,
    )
    assert "not an available model" in r.content.decode()
    assert ProjectLoop.of(team.project).base_model in ("", "demo")


@pytest.fixture
def trained(team, roots):
    """The team project with v0 on the good model and a trained v1 serving."""
    ProjectLoop.store(team.project, base_model=str(roots / "good"))
    v0 = base_version(team.project)
    ModelVersion.objects.filter(pk=v0.pk).update(state=ModelVersion.State.RETIRED)
    ModelVersion.objects.create(
        project=team.project, number=1, spec="v1", parent=v0, state=ModelVersion.State.SERVING
    )
    return team


def test_base_model_is_fixed_once_versions_are_trained(trained, roots):
    assert has_trained_versions(trained.project)
    r = patch(trained, "demo", name="renamed")
    assert r.status_code == 400, r.content
    assert "new_chain" in r.json()["detail"]
    trained.project.refresh_from_db()
    assert trained.project.name == "Team project"
    assert ProjectLoop.of(trained.project).base_model == str(roots / "good")
    assert patch(trained, str(roots / "good")).status_code == 200


def test_a_new_chain_starts_from_the_new_base(trained, roots):
    r = patch(trained, "demo", new_chain=True)
    assert r.status_code == 200, r.content
    assert r.json()["base_model"] == "demo" and r.json()["new_chain"] is False
    root = base_version(trained.project)
    assert (root.number, root.spec, root.parent) == (2, "demo", None)
    assert serving_version(trained.project) == root
    assert ModelVersion.objects.get(project=trained.project, number=1).state == "retired"


def test_a_new_chain_on_the_loop_page(trained, client):
    client.force_login(trained.lead)
    client.post(
        f"/projects/{trained.project.pk}/loop/settings/",
        {"base_model": "demo", "loop_settings": "{}", "new_chain": "on"},
    )
    assert base_version(trained.project).spec == "demo"


def test_new_chain_must_be_a_boolean(team):
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {"new_chain": "yes"}, format="json"
    )
    assert r.status_code == 400 and "new_chain" in r.json()
