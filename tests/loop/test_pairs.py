"""A round's training pairs: the shared majority rule, its tie policies, and replay."""

from __future__ import annotations

from typing import Any

import pytest

from annotate.models import Comparison, Project
from tests.datasets.conftest import vote
from tests.factories import ComparisonFactory, ProjectFactory
from training import services
from training.loop_settings import LoopSettings
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

    pairs, replayed = services.round_pairs(second, LoopSettings())
    assert replayed == 0
    assert [p.comparison_id for p in pairs] == [c.pk for c in own]
    assert pairs[1].chosen == own[1].completion_b.text and pairs[1].weight == 1.0

    settings = LoopSettings(replay_share=1.0, seed=3)
    pairs, replayed = services.round_pairs(second, settings)
    assert replayed == 2 and len(pairs) == 4
    assert [p.comparison_id for p in pairs[:2]] == [c.pk for c in own]
    assert {p.comparison_id for p in pairs[2:]} <= {c.pk for c in earlier}
    again, _ = services.round_pairs(second, settings)
    assert [p.comparison_id for p in again] == [p.comparison_id for p in pairs]
    pair = pairs[0].to_preference_pair()
    assert (pair.chosen, pair.rejected) == (own[0].completion_a.text, own[0].completion_b.text)
