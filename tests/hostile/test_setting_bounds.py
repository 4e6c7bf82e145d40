"""Every loop setting and DPO option has a type and generous upper and lower bounds."""

from __future__ import annotations

import pytest

from training.loop_settings import json_schema
from training.models import ProjectLoop

from ..conftest import api_for

REFUSED = [
    ({"max_new_tokens": 10**12}, "max_new_tokens: must be at most"),
    ({"k": 10**6}, "k: must be at most"),
    ({"prompts_per_round": 10**9}, "prompts_per_round: must be at most"),
    ({"temperature": 1e308}, "temperature: must be at most"),
    ({"seed": -1}, "seed: must be at least 0"),
    ({"min_pairs": 10**9}, "min_pairs: must be at most"),
    ({"generation_batch_size": 10**6}, "generation_batch_size: must be at most"),
    ({"gate_judge": "x" * 501}, "gate_judge: must be at most 500 characters"),
    ({"dpo": {"epochs": 10**9}}, "dpo.epochs: must be at most"),
    ({"dpo": {"batch_size": 10**7}}, "dpo.batch_size: must be at most"),
    ({"dpo": {"device": "cuda:77"}}, "dpo.device: must be"),
    ({"dpo": {"device": "tpu"}}, "dpo.device: must be"),
    ({"dpo": {"seed": "abc"}}, "dpo.seed: expected integer"),
    ({"dpo": {"lora": "yes"}}, "dpo.lora: expected boolean"),
    ({"dpo": {"max_steps": "many"}}, "dpo.max_steps: expected integer or null"),
    ({"dpo": {"learning_rate": 1e9}}, "dpo.learning_rate: must be at most"),
    ({"dpo": {"lora_target_modules": ["q"] * 100}}, "dpo.lora_target_modules: must list"),
    ({"dpo": {"lora_target_modules": [1]}}, "dpo.lora_target_modules: expected list"),
    ({"dpo": {"compile": "everything"}}, "compile must be one of none, layers, model"),
    ({"dpo": {"compile_backend": "tvm"}}, "compile_backend must be one of"),
    ({"dpo": {"precision": "fp8"}}, "precision must be one of"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_it_refuses_settings_out_of_bounds_on_the_api(team, values, message):
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {"loop_settings": values}, format="json"
    )
    assert r.status_code == 400, r.content
    assert message in " ".join(r.json()["loop_settings"])
    assert ProjectLoop.of(team.project).settings == {}


@pytest.mark.parametrize(
    "fields", [{"temperature": "NaN"}, {"temperature": "inf"}, {"dpo": '{"beta": Infinity}'}]
)
def test_it_refuses_non_finite_numbers_on_the_loop_page(team, client, fields):
    client.force_login(team.lead)
    r = client.post(f"/projects/{team.project.pk}/loop/settings/", {"base_model": "demo", **fields})
    assert r.status_code == 400
    (name,) = fields
    page = r.content.decode()
    assert "must be a finite number" in page and f'id="field-{name}"' in page
    assert ProjectLoop.of(team.project).settings == {}


@pytest.mark.parametrize(
    "values",
    [
        {"max_new_tokens": 4096, "k": 8, "prompts_per_round": 500, "temperature": 1.2},
        {"dpo": {"device": "cuda:7", "epochs": 3, "batch_size": 64, "seed": 42}},
        {"dpo": {"device": "auto", "max_steps": None}},
        {"dpo": {"device": "cuda"}},
        {"dpo": {"device": "cpu", "lora_target_modules": ["q_proj", "v_proj"]}},
    ],
)
def test_it_accepts_generous_settings(team, values):
    r = api_for(team.lead).patch(
        f"/api/projects/{team.project.pk}/", {"loop_settings": values}, format="json"
    )
    assert r.status_code == 200, r.content
    assert ProjectLoop.of(team.project).settings == values


def test_the_schema_documents_the_bounds():
    schema = json_schema()["properties"]
    assert schema["max_new_tokens"]["maximum"] == 32_768
    assert schema["k"]["minimum"] == 2 and schema["k"]["maximum"] == 64
    assert schema["temperature"] == {
        "type": "number",
        "default": 0.8,
        "minimum": 0.0,
        "maximum": 10.0,
    }
    dpo = schema["dpo"]
    assert dpo["additionalProperties"] is False
    assert dpo["properties"]["epochs"]["maximum"] == 1000
    assert dpo["properties"]["seed"]["type"] == "integer"
    assert dpo["properties"]["compile"]["enum"] == ["none", "layers", "model"]
    assert dpo["properties"]["precision"]["enum"] == ["auto", "fp32", "bf16-autocast", "bf16"]
    assert dpo["properties"]["max_steps"]["nullable"] is True
    assert "cuda" in dpo["properties"]["device"]["pattern"]


def test_the_api_schema_carries_the_bounds(team):
    r = api_for(team.lead).get("/api/schema/", {"format": "json"})
    assert r.status_code == 200
    assert '"maximum": 32768' in r.content.decode() or '"maximum":32768' in r.content.decode()


@pytest.mark.parametrize(("field", "value"), [("instructions", "x" * 100_001), ("overlap", 51)])
def test_it_bounds_project_fields(team, field, value):
    r = api_for(team.lead).patch(f"/api/projects/{team.project.pk}/", {field: value}, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()
