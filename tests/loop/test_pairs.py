"""A round's training pairs: the shared majority rule, its tie policies, and replay."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from annotate.models import Comparison, Project
from tests.datasets.conftest import vote
from tests.factories import ComparisonFactory, ProjectFactory
from training import services
from training.loop_settings import LoopSettings, validate_loop_settings
from training.models import Round


def _round(project: Project, number: int, state: str) -> Round:
    return Round.objects.create(
        project=project, number=number, policy=services.base_version(project), state=state
    )


def _judged(project: Project, round_number: int, *choices: str, **fields: Any) -> Comparison:
    comparison = ComparisonFactory(project=project, round=round_number, **fields)
    for choice in choices:
        vote(comparison, choice)
    return comparison


@pytest.mark.django_db
def test_it_counts_ties_as_weak_votes_when_asked() -> None:
    project = ProjectFactory()
    diluted = _judged(project, 1, "a", "a", "tie")
    even = _judged(project, 1, "a", "both_bad", "b")
    comparisons = [diluted, even]

    dropped = services.aggregate(comparisons, LoopSettings(agreement_weight=True))
    assert [(p.comparison_id, p.weight) for p in dropped] == [(diluted.pk, 1.0)]
    weak = services.aggregate(comparisons, LoopSettings(ties="weak", agreement_weight=True))
    assert [(p.comparison_id, p.weight) for p in weak] == [(diluted.pk, pytest.approx(2.5 / 3))]
    assert weak[0].chosen == diluted.completion_a.text
    assert weak[0].messages == diluted.prompt.messages


@pytest.mark.django_db
def test_it_trains_on_the_rounds_train_comparisons_and_replays_earlier_ones() -> None:
    project = ProjectFactory()
    _round(project, 1, Round.State.PROMOTED)
    second = _round(project, 2, Round.State.COLLECTING)
    earlier = [_judged(project, 1, "b") for _ in range(4)]
    own = [_judged(project, 2, "a"), _judged(project, 2, "b", "b", "a")]
    _judged(project, 2, "a", kind=Comparison.Kind.EVAL)
    _judged(project, 2)  # not judged yet
    _judged(project, 2, "tie")
    _judged(project, 3, "a")

    pairs, replayed = services.round_pairs(second, LoopSettings(replay_share=0.0))
    assert replayed == 0
    assert [p.comparison_id for p in pairs] == [c.pk for c in own]
    assert pairs[1].chosen == own[1].completion_b.text and pairs[1].weight == 1.0

    settings = LoopSettings(replay_share=0.5, seed=3)
    pairs, replayed = services.round_pairs(second, settings)
    assert replayed == 2 and len(pairs) == 4
    assert [p.comparison_id for p in pairs[:2]] == [c.pk for c in own]
    assert {p.comparison_id for p in pairs[2:]} <= {c.pk for c in earlier}
    again, _ = services.round_pairs(second, settings)
    assert [p.comparison_id for p in again] == [p.comparison_id for p in pairs]
    pair = pairs[0].to_preference_pair()
    assert (pair.chosen, pair.rejected) == (own[0].completion_a.text, own[0].completion_b.text)


@pytest.mark.django_db
def test_soft_labels_carry_the_minority_share_into_training_pairs() -> None:
    project = ProjectFactory()
    loop_round = _round(project, 1, Round.State.COLLECTING)
    split = _judged(project, 1, "b", "b", "a")
    diluted = _judged(project, 1, "a", "a", "tie")
    _judged(project, 1, "a", "tie", "tie")  # one A vote does not beat two ties: no pair
    hard, _ = services.round_pairs(loop_round, LoopSettings())  # round 1: nothing to replay
    assert [p.to_preference_pair().label_smoothing for p in hard] == [0.0, 0.0]
    soft, _ = services.round_pairs(loop_round, LoopSettings(soft_labels=True))
    assert [p.comparison_id for p in soft] == [split.pk, diluted.pk]
    # "drop" (the default): the tie vote does not count; "weak": it counts half for each side
    assert [p.label_smoothing for p in soft] == [pytest.approx(1 / 3), 0.0]
    weak, _ = services.round_pairs(loop_round, LoopSettings(soft_labels=True, ties="weak"))
    pair = weak[1].to_preference_pair()
    assert pair.label_smoothing == pytest.approx(1 / 6) and pair.chosen == diluted.completion_a.text


@pytest.mark.django_db
def test_aggregation_never_makes_a_pair_of_an_eval_comparison() -> None:
    project = ProjectFactory()
    train = _judged(project, 1, "a")
    _judged(project, 1, "a", kind=Comparison.Kind.EVAL)
    every = list(Comparison.objects.filter(project=project))
    for settings in (LoopSettings(), LoopSettings(ties="weak", soft_labels=True)):
        assert [p.comparison_id for p in services.aggregate(every, settings)] == [train.pk]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"soft_labels": "yes"}, "soft_labels: expected bool"),
        (
            {"soft_labels": True, "dpo": {"loss": "ipo"}},
            "soft_labels: needs the sigmoid loss, not dpo.loss 'ipo'",
        ),
    ],
)
def test_bad_soft_label_settings_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        validate_loop_settings(data)
    assert validate_loop_settings({"soft_labels": True}) == {"soft_labels": True}
