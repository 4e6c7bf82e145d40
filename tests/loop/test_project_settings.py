"""The lead's base model and loop settings, written by training's one service for them."""

from __future__ import annotations

from typing import Any

import pytest

from annotate.errors import InvalidInput
from annotate.models import Project
from training.models import ProjectLoop
from training.services.project_settings import update_loop_settings


def _stored(project: Project) -> tuple[str, Any]:
    row = ProjectLoop.of(project)
    return row.base_model, row.settings


def test_it_saves_the_base_model_and_the_settings(team: Any) -> None:
    update_loop_settings(
        team.project, base_model="  demo ", loop_settings='{"k": 3, "trigger": "manual"}'
    )
    assert _stored(team.project) == ("demo", {"k": 3, "trigger": "manual"})


def test_it_takes_settings_already_decoded(team: Any) -> None:
    update_loop_settings(team.project, base_model="org/model", loop_settings={"k": 4})
    assert _stored(team.project) == ("org/model", {"k": 4})


@pytest.mark.parametrize(
    ("base_model", "loop_settings", "named"),
    [
        ("demo", '{"k": 3,', "Loop settings are not valid JSON"),
        ("demo", '{"k": 1}', "k:"),
        ("demo", '{"dpo": {"beta": -1}}', "beta"),
        ("demo", '{"sometimes": true}', "sometimes"),
        ("demo", "[]", "JSON object"),
        ("/no/such/dir", '{"k": 3}', "base_model:"),
    ],
)
def test_it_rejects_a_bad_value_naming_it_and_writes_nothing(
    team: Any, base_model: str, loop_settings: str, named: str
) -> None:
    ProjectLoop.store(team.project, base_model="org/before", settings={"k": 5})
    with pytest.raises(InvalidInput) as caught:
        update_loop_settings(team.project, base_model=base_model, loop_settings=loop_settings)
    assert named in caught.value.message
    assert _stored(team.project) == ("org/before", {"k": 5})


def first_wins(messages: Any, a: str, b: str) -> str:
    """A judge callable for the allow-list test."""
    return "a"


@pytest.mark.parametrize(
    "judge",
    ["os.system", "os.path:join", "cap:64:os.system", "cap:64:cap:8:shutil.rmtree"],
)
def test_a_lead_cannot_name_a_callable_outside_the_allowed_modules(team: Any, judge: str) -> None:
    with pytest.raises(InvalidInput, match="gate_judge:.*PREFLOOP_JUDGE_MODULES"):
        update_loop_settings(team.project, base_model="demo", loop_settings={"gate_judge": judge})
    assert ProjectLoop.of(team.project).settings.get("gate_judge") is None


def test_a_gate_judge_is_checked_when_saved(team: Any, settings: Any) -> None:
    with pytest.raises(InvalidInput, match="gate_judge:.*unknown rule"):
        update_loop_settings(team.project, base_model="demo", loop_settings={"gate_judge": "x"})
    with pytest.raises(InvalidInput, match="gate_judge:.*max-words"):
        update_loop_settings(
            team.project, base_model="demo", loop_settings={"gate_judge": "max-words:many"}
        )
    update_loop_settings(
        team.project, base_model="demo", loop_settings={"gate_judge": "cap:64:contains:please"}
    )
    settings.PREFLOOP_JUDGE_MODULES = ["tests.loop"]
    path = f"{__name__}.first_wins"
    update_loop_settings(team.project, base_model="demo", loop_settings={"gate_judge": path})
    assert ProjectLoop.of(team.project).settings["gate_judge"] == path
