"""Replay: a round trains on its own pairs and a share of every earlier round's train pairs."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from annotate.errors import InvalidInput
from annotate.models import Comparison, Project
from tests.datasets.conftest import vote
from tests.factories import ComparisonFactory, ProjectFactory
from training import services
from training.core import trainer
from training.loop_settings import LoopSettings, validate_loop_settings
from training.models import Round

from .conftest import judge_round, make_loop_project

pytestmark = pytest.mark.django_db


def _round(project: Project, number: int, state: str) -> Round:
    return Round.objects.create(
        project=project, number=number, policy=services.base_version(project), state=state
    )


def _judged(project: Project, round_number: int, *choices: str, **fields: Any) -> Comparison:
    comparison = ComparisonFactory(project=project, round=round_number, **fields)
    for choice in choices:
        vote(comparison, choice)
    return comparison


@pytest.fixture
def history() -> dict[str, Any]:
    """Round 1 promoted with six train pairs and judged eval and gold pairs; round 2 open."""
    project = ProjectFactory()
    _round(project, 1, Round.State.PROMOTED)
    second = _round(project, 2, Round.State.COLLECTING)
    first_train = [_judged(project, 1, "a" if i % 2 else "b") for i in range(6)]
    _judged(project, 1, "a", "tie", "tie")  # no majority over the ties: no pair
    first_eval = [_judged(project, 1, "a", kind=Comparison.Kind.EVAL) for _ in range(3)]
    _judged(project, 1, "a", kind=Comparison.Kind.GOLD)
    own = [_judged(project, 2, "a"), _judged(project, 2, "b")]
    _judged(project, 2, "b", kind=Comparison.Kind.EVAL)
    _judged(project, 3, "a")
    return {
        "round": second,
        "first_train": {c.pk for c in first_train},
        "first_eval": {c.pk for c in first_eval},
        "own": [c.pk for c in own],
    }


def test_by_default_a_round_trains_on_all_earlier_train_pairs(history: dict[str, Any]) -> None:
    assert LoopSettings().replay_share == 1.0
    pairs, replayed = services.round_pairs(history["round"], LoopSettings())
    ids = [p.comparison_id for p in pairs]
    assert ids[:2] == history["own"]
    assert replayed == 6 and set(ids[2:]) == history["first_train"]


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (0.25, 2), (0.5, 3), (0.9, 5)])
def test_replay_takes_the_share_of_earlier_pairs_it_asks_for(
    history: dict[str, Any], share: float, expected: int
) -> None:
    # 6 earlier pairs: 0.25 -> 1.5 rounds to 2, 0.9 -> 5.4 rounds to 5
    settings = LoopSettings(replay_share=share, seed=1)
    pairs, replayed = services.round_pairs(history["round"], settings)
    ids = [p.comparison_id for p in pairs]
    assert replayed == expected and len(ids) == 2 + expected
    assert len(set(ids[2:])) == expected and set(ids[2:]) <= history["first_train"]
    again, _ = services.round_pairs(history["round"], settings)
    assert [p.comparison_id for p in again] == ids


def test_no_training_path_sees_an_eval_comparison(history: dict[str, Any]) -> None:
    evals = set(Comparison.objects.filter(kind=Comparison.Kind.EVAL).values_list("pk", flat=True))
    assert len(evals) == 4
    for settings in (LoopSettings(), LoopSettings(ties="weak", soft_labels=True)):
        pairs, _ = services.round_pairs(history["round"], settings)
        assert not {p.comparison_id for p in pairs} & evals
    every = list(Comparison.objects.all())
    assert not {p.comparison_id for p in services.aggregate(every, LoopSettings())} & evals


def test_round_two_trains_on_round_ones_train_pairs_and_never_eval(
    tiny_model_dir: Any, var_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the whole lifecycle: what reaches the trainer in round 2 is its own pairs and
    round 1's train pairs; the simulated annotators judged the eval comparisons too."""
    project = make_loop_project(tiny_model_dir)
    trained: list[list[Any]] = []
    real_train = trainer.train_dpo

    def recording_train(pairs: Any, *args: Any, **kwargs: Any) -> Any:
        trained.append(list(pairs))
        return real_train(pairs, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_dpo", recording_train)
    for _ in range(2):
        with services.in_process():
            run = judge_round(project)
            loop_round = run.round
            services.train_round(run.pk)
        assert Round.objects.get(pk=loop_round.pk).state == Round.State.PROMOTED

    def keyed(pairs: Any) -> list[tuple[str, str, str]]:
        return sorted((json.dumps(p.prompt), p.chosen, p.rejected) for p in pairs)

    settings = LoopSettings.from_dict(project.loop.settings)

    def round_labels(number: int) -> list[tuple[str, str, str]]:
        comparisons = list(Comparison.objects.filter(round=number))
        return keyed(p.to_preference_pair() for p in services.aggregate(comparisons, settings))

    first, second_own = round_labels(1), round_labels(2)
    assert first and second_own
    assert keyed(trained[0]) == first
    assert keyed(trained[1]) == sorted(first + second_own)
    judged_evals = Comparison.objects.filter(kind=Comparison.Kind.EVAL, judgment_count__gt=0)
    assert judged_evals.exists()
    eval_prompts = {json.dumps(c.prompt.messages) for c in judged_evals}
    assert not {prompt for prompt, _, _ in keyed(trained[0] + trained[1])} & eval_prompts


def test_a_round_without_judged_pairs_of_its_own_does_not_train() -> None:
    project = ProjectFactory()
    _round(project, 1, Round.State.PROMOTED)
    second = _round(project, 2, Round.State.COLLECTING)
    _judged(project, 1, "a")
    _judged(project, 2)  # not judged yet
    assert services.round_pairs(second, LoopSettings())[1] == 1
    with pytest.raises(InvalidInput, match="Round 2 has no judged pair with a majority yet"):
        services.begin_training(second)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"replay_share": 1.5}, "replay_share: must lie between 0 and 1"),
        ({"replay_share": -0.1}, "replay_share: must lie between 0 and 1"),
    ],
)
def test_a_bad_replay_share_names_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_loop_settings(data)
    assert validate_loop_settings({"replay_share": 0.5}) == {"replay_share": 0.5}
