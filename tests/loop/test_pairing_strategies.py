"""The `pairing` loop setting: most-different pairs in a round, best vs worst under run_rounds."""

from __future__ import annotations

import io
import itertools
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.errors import InvalidInput
from annotate.models import Comparison, Completion, Project
from training import services
from training.core.generation import Sample
from training.core.pairing import make_pairs, word_distance
from training.loop_settings import LoopSettings, validate_loop_settings
from training.models import ModelVersion, Round
from training.services.simulation import rule_scores, shorter

from .conftest import judge_round, make_loop_project


def _round_samples(loop_round: Round) -> dict[int, list[Completion]]:
    """The round's train completions per prompt, in sample order."""
    out: dict[int, list[Completion]] = {}
    rows = Completion.objects.filter(
        prompt_id__in=loop_round.prompt_ids, model_version_id=loop_round.policy_id
    ).order_by("pk")
    for row in rows:
        out.setdefault(row.prompt_id, []).append(row)
    return out


def _train_comparisons(loop_round: Round) -> list[Comparison]:
    return list(
        Comparison.objects.filter(
            project=loop_round.project, round=loop_round.number, kind=Comparison.Kind.TRAIN
        ).select_related("completion_a", "completion_b")
    )


def test_pairing_defaults_to_auto_and_names_itself_when_wrong() -> None:
    assert LoopSettings().pairing == "auto"
    assert validate_loop_settings({"pairing": "most_different"}) == {"pairing": "most_different"}
    with pytest.raises(
        ValidationError, match="pairing: must be one of auto, random, most_different, best_vs"
    ):
        validate_loop_settings({"pairing": "lead"})


def test_auto_pairs_best_vs_worst_with_a_judge_and_at_random_without() -> None:
    auto = LoopSettings()
    assert auto.pairing_strategy(judge_at_hand=True) == "best_vs_worst"
    assert auto.pairing_strategy(judge_at_hand=False) == "random"
    # a lead's explicit choice stands either way
    for chosen in ("random", "most_different", "best_vs_worst"):
        for judge in (True, False):
            assert LoopSettings(pairing=chosen).pairing_strategy(judge_at_hand=judge) == chosen


def test_rule_scores_count_round_robin_wins_and_half_ties() -> None:
    # shorter: (0,1) b  (0,2) b  (0,3) b  (1,2) a  (1,3) tie  (2,3) b
    assert rule_scores(shorter, [], ["aaa", "a", "aa", "b"]) == [0.0, 2.5, 1.0, 2.5]


def test_a_round_with_most_different_compares_the_farthest_samples(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = make_loop_project(tiny_model_dir, pairing="most_different", k=4, max_new_tokens=8)
    with services.in_process():
        run = judge_round(project)
        loop_round = run.round
        services.train_round(run.pk)
    loop_round.refresh_from_db()
    assert loop_round.settings["pairing"] == "most_different"
    assert loop_round.state == Round.State.PROMOTED
    samples = _round_samples(loop_round)
    comparisons = _train_comparisons(loop_round)
    assert len(comparisons) == len(loop_round.prompt_ids)
    for comparison in comparisons:
        texts = [row.text for row in samples[comparison.prompt_id]]
        assert len(texts) == 4
        farthest = max(
            word_distance(a, b)
            for a, b in itertools.combinations(texts, 2)
            if a.strip() != b.strip()
        )
        chosen = word_distance(comparison.completion_a.text, comparison.completion_b.text)
        assert chosen == farthest


def _best_vs_worst_project(tiny_model_dir: Path, pairing: str = "best_vs_worst") -> Project:
    return make_loop_project(
        tiny_model_dir, pairing=pairing, k=3, max_new_tokens=8, auto_next_round=False
    )


@pytest.mark.parametrize("pairing", ["best_vs_worst", "auto"])
def test_run_rounds_pairs_the_best_and_worst_sample_by_the_simulated_rule(
    db: Any, tiny_model_dir: Path, var_dir: Path, pairing: str
) -> None:
    project = _best_vs_worst_project(tiny_model_dir, pairing)
    out = io.StringIO()
    call_command(
        "run_rounds",
        project.slug,
        "--rounds", "1",
        "--simulate", "shorter",
        "--annotators", "1",
        "--noise", "0",
        "--eval-prompts", "2",
        stdout=out,
    )  # fmt: skip
    loop_round = Round.objects.get(project=project)
    assert loop_round.state == Round.State.PROMOTED, out.getvalue()
    samples = _round_samples(loop_round)
    comparisons = _train_comparisons(loop_round)
    assert comparisons
    for comparison in comparisons:
        rows = samples[comparison.prompt_id]
        scores = rule_scores(shorter, [], [row.text for row in rows])
        by_pk = {row.pk: s for row, s in zip(rows, scores, strict=True)}
        distinct = [
            abs(by_pk[a.pk] - by_pk[b.pk])
            for a, b in itertools.combinations(rows, 2)
            if a.text.strip() != b.text.strip()
        ]
        gap = abs(by_pk[comparison.completion_a_id] - by_pk[comparison.completion_b_id])
        assert gap == max(distinct)
    assert ModelVersion.objects.filter(trained_in=loop_round).exists()


def test_auto_without_a_judge_pairs_at_random_where_best_vs_worst_would_fail(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = _best_vs_worst_project(tiny_model_dir, "auto")
    with services.in_process():
        loop_round = services.start_round(project)
        services.generate_round(loop_round.pk)
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.COLLECTING
    seed = loop_round.settings["seed"] + 1000 * loop_round.number
    comparisons = _train_comparisons(loop_round)
    assert comparisons
    by_prompt = _round_samples(loop_round)
    for comparison in comparisons:
        rows = by_prompt[comparison.prompt_id]
        samples = [Sample(text=row.text, token_count=0, logprob=0.0) for row in rows]
        a, b = make_pairs(samples, seed=seed + comparison.prompt_id, strategy="random")[0]
        assert {rows[a].pk, rows[b].pk} == {
            comparison.completion_a_id,
            comparison.completion_b_id,
        }


def test_best_vs_worst_without_a_judge_fails_the_round_before_sampling(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = _best_vs_worst_project(tiny_model_dir)
    with services.in_process():
        loop_round = services.start_round(project)
        with pytest.raises(InvalidInput, match="best_vs_worst needs a simulated judge"):
            services.generate_round(loop_round.pk)
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.FAILED
    assert "run_rounds --simulate" in loop_round.error
    assert not Completion.objects.filter(prompt__project=project).exists()


def test_run_rounds_via_the_worker_refuses_best_vs_worst(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = _best_vs_worst_project(tiny_model_dir)
    with pytest.raises(CommandError, match="without --via-worker"):
        call_command("run_rounds", project.slug, "--simulate", "shorter", "--via-worker")
    assert not Round.objects.filter(project=project).exists()
