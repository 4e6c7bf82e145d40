"""What a round trains on and records: finished flags, sampled ids, votes, shown to the lead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from transformers import AutoTokenizer

from annotate.models import Comparison, Completion, Judgment, Membership, Project
from tests.conftest import api_for
from tests.factories import UserFactory
from training import services
from training.core.data import tokenize_pair
from training.models import ProjectLoop, Round
from training.services.training_data import round_pairs


def _generated(project: Project) -> Round:
    with services.in_process():
        loop_round = services.start_round(project)
        services.generate_round(loop_round.pk)
    return Round.objects.get(pk=loop_round.pk)


def _vote(comparison: Comparison, *choices: str) -> None:
    for n, choice in enumerate(choices):
        Judgment.objects.create(
            comparison=comparison,
            project=comparison.project,
            annotator=UserFactory(username=f"voter{n}"),
            choice=choice,
            left_is_a=True,
        )
    Comparison.objects.filter(pk=comparison.pk).update(judgment_count=len(choices))


def _lead(project: Project) -> Any:
    return project.memberships.get(role=Membership.Role.LEAD).user


@pytest.fixture
def judged_round(loop_project: Project) -> Round:
    loop_round = _generated(loop_project)
    c1, c2, c3, c4 = Comparison.objects.filter(round=loop_round.number).order_by("pk")
    _vote(c1, "a", "a", "tie")
    _vote(c2, "b", "b")
    _vote(c3, "tie")
    _vote(c4, "a", "both_bad")
    with services.in_process():
        services.begin_training(loop_round)
    loop_round.refresh_from_db()
    return loop_round


def test_training_starts_by_recording_ties_and_agreement(judged_round: Round) -> None:
    stats = judged_round.stats
    assert stats["judgments"] == 8
    assert stats["tie_rate"] == 0.25  # 2 of 8 votes
    assert stats["both_bad_rate"] == 0.125
    # pairs with two votes or more: 2/3, 2/2 and 1/2 of the votes for the top choice
    assert stats["agreement"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3, abs=1e-4)
    assert stats["pairs_with_several_votes"] == 3
    # what generation recorded stays
    assert stats["completions"] == 8 and "truncated_share" in stats


def test_the_loop_page_and_the_api_show_the_rounds_data(judged_round: Round) -> None:
    project = judged_round.project
    client = Client()
    client.force_login(_lead(project))
    body = client.get(f"/projects/{project.pk}/loop/").content.decode()
    share = round(judged_round.stats["truncated_share"] * 100)
    assert f'<td class="stat-truncated">{share}%</td>' in body
    assert '<td class="stat-ties">25%</td>' in body
    assert '<td class="stat-agreement">0.72</td>' in body
    mean = f"{judged_round.stats['mean_tokens']:.1f}"
    assert f'<td class="stat-length">{mean}</td>' in body

    (row,) = api_for(_lead(project)).get(f"/api/projects/{project.pk}/rounds/").json()
    assert row["stats"]["tie_rate"] == 0.25
    assert row["stats"]["truncated_share"] == judged_round.stats["truncated_share"]
    assert row["stats"]["mean_tokens"] == judged_round.stats["mean_tokens"]


def test_round_pairs_carry_finished_sampled_ids_and_the_system_prompt(
    loop_project: Project, tiny_model_dir: Path
) -> None:
    settings = {**ProjectLoop.of(loop_project).settings, "system_prompt": "Be brief."}
    ProjectLoop.store(loop_project, settings=settings)
    loop_round = _generated(loop_project)
    services.simulate_annotators(
        loop_project, "shorter", annotators=1, noise=0.0, round_number=loop_round.number
    )
    pairs, _ = round_pairs(loop_round, services.loop_settings(loop_project))
    assert pairs
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for pair in pairs:
        comparison = Comparison.objects.get(pk=pair.comparison_id)
        by_text = {
            c.text: c for c in Completion.objects.filter(pk__in=[comparison.completion_a_id,
                                                                 comparison.completion_b_id])
        }  # fmt: skip
        chosen, rejected = by_text[pair.chosen], by_text[pair.rejected]
        assert (pair.chosen_finished, pair.rejected_finished) == (
            chosen.finished,
            rejected.finished,
        )
        assert (pair.chosen_token_ids, pair.rejected_token_ids) == (
            chosen.token_ids,
            rejected.token_ids,
        )
        assert pair.messages[0] == {"role": "system", "content": "Be brief."}
        assert pair.messages[1:] == comparison.prompt.messages
        tokenized = tokenize_pair(tokenizer, pair.to_preference_pair(), 512, 256)
        assert tokenized is not None
        # the ids the policy sampled, after the prompt it sampled them from
        assert tokenized.chosen_ids == chosen.token_ids
        assert tokenized.rejected_ids == rejected.token_ids
        sampled_from = tokenizer.apply_chat_template(
            pair.messages, tokenize=True, return_dict=True, add_generation_prompt=True
        )["input_ids"]
        assert tokenized.prompt_ids == sampled_from


@pytest.mark.parametrize(
    "value, message",
    [(5, "system_prompt: expected str"), ("x" * 4001, "system_prompt: must be at most 4000")],
)
def test_a_bad_system_prompt_is_refused_by_name(value: Any, message: str) -> None:
    from django.core.exceptions import ValidationError

    from training.loop_settings import validate_loop_settings

    with pytest.raises(ValidationError, match=message):
        validate_loop_settings({"system_prompt": value})
