"""One name per version everywhere: the versions API and the OpenAI-compatible server say
"base", "v1", ... (":v0" is still understood as the base)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import api_for
from training import services
from training.models import ModelVersion
from training.serving import ApiError, ChatService, Registry


@pytest.fixture
def versions(team: Any) -> dict[str, ModelVersion]:
    base = services.base_version(team.project)
    v1 = ModelVersion.objects.create(project=team.project, number=1, spec="v1", parent=base)
    v2 = ModelVersion.objects.create(
        project=team.project, number=2, spec="v2", parent=v1, state=ModelVersion.State.REJECTED
    )
    return {"base": base, "v1": v1, "v2": v2}


def test_the_versions_api_names_versions_and_parents_by_label(team, versions):
    response = api_for(team.alice).get(f"/api/projects/{team.project.pk}/versions/")
    assert response.status_code == 200
    slug = team.project.slug
    rows = [
        {k: row[k] for k in ("number", "label", "parent", "parent_id", "model")}
        for row in response.json()
    ]
    assert rows == [
        {"number": 0, "label": "base", "parent": None, "parent_id": None, "model": f"{slug}:base"},
        {
            "number": 1,
            "label": "v1",
            "parent": "base",
            "parent_id": versions["base"].pk,
            "model": f"{slug}:v1",
        },
        {
            "number": 2,
            "label": "v2",
            "parent": "v1",
            "parent_id": versions["v1"].pk,
            "model": f"{slug}:v2",
        },
    ]


def test_the_server_lists_and_resolves_the_same_names(team, versions):
    slug = team.project.slug
    listed = [m["id"] for m in ChatService(Registry()).models()["data"]]
    assert listed == [slug, f"{slug}:base", f"{slug}:v1", f"{slug}:v2"]
    registry = Registry()
    assert registry.resolve(f"{slug}:base") == versions["base"]
    assert registry.resolve(f"{slug}:v0") == versions["base"]  # the old name still works
    assert registry.resolve(f"{slug}:v1") == versions["v1"]
    assert registry.resolve(slug) == versions["base"]  # the serving one
    assert str(versions["v2"]) == versions["v2"].model_name == f"{slug}:v2"
    with pytest.raises(ApiError, match="no such version"):
        registry.resolve(f"{slug}:v3")


def test_the_schema_documents_version_names_and_pair_counts(team):
    schema = api_for(team.lead).get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    version = components["Version"]["properties"]
    assert {"label", "parent", "parent_id", "model"} <= set(version)
    assert version["parent"]["type"] == "string"
    round_ = components["Round"]["properties"]
    assert {"policy_label", "new_version_label", "pairs"} <= set(round_)
    assert set(components["PairCounts"]["properties"]) == {
        "trained",
        "replayed",
        "judged",
        "unjudged",
        "not_trained",
        "export",
    }
    export = schema["paths"]["/api/projects/{project_id}/export/"]["get"]["parameters"]
    assert "versions" in {p["name"] for p in export}
