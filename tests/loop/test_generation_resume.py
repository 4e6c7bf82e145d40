"""A round's generation stores each batch as it goes; a stopped one resumes without duplicates."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from annotate.models import Comparison, Completion, Project
from training import services
from training.models import ModelVersion, Round

from .conftest import make_loop_project


class Stop(Exception):
    pass


@pytest.fixture
def project(db: Any, tiny_model_dir: Path, var_dir: Path) -> Project:
    # one prompt per forward batch, so a round takes several batches
    project = make_loop_project(tiny_model_dir, generation_batch_size=2)
    # a serving v1 (the same weights as the base) makes the round pit it against the base on
    # eval prompts too
    base = services.base_version(project)
    base.state = ModelVersion.State.RETIRED
    base.save(update_fields=["state"])
    ModelVersion.objects.create(
        project=project,
        number=1,
        spec=str(tiny_model_dir),
        parent=base,
        state=ModelVersion.State.SERVING,
    )
    return project


def _start(project: Project) -> Round:
    with services.in_process():
        return services.start_round(project)


def _completions(loop_round: Round) -> list[tuple[Any, ...]]:
    rows = Completion.objects.filter(round_number=loop_round.number).values_list(
        "prompt_id", "model_version_id", "sample_index", "text", "token_ids", "finished"
    )
    return sorted(rows, key=lambda r: r[:3])


def _comparisons(loop_round: Round) -> list[tuple[Any, ...]]:
    rows = []
    for c in Comparison.objects.filter(round=loop_round.number).select_related(
        "completion_a", "completion_b"
    ):
        a, b = c.completion_a, c.completion_b
        rows.append(
            (c.prompt_id, c.kind, a.model_version_id, a.sample_index, a.text, b.model_version_id,
             b.sample_index, b.text)
        )  # fmt: skip
    return sorted(rows)


def _forget_generation(loop_round: Round) -> None:
    Comparison.objects.filter(round=loop_round.number).delete()
    Completion.objects.filter(round_number=loop_round.number).delete()
    Round.objects.filter(pk=loop_round.pk).update(
        state=Round.State.GENERATING, progress_done=0, stats={}
    )


def test_a_stopped_generation_is_completed_by_the_retry_without_duplicates(
    project: Project,
) -> None:
    loop_round = _start(project)
    assert len(loop_round.eval_prompt_ids) == 2
    services.generate_round(loop_round.pk)
    whole_completions, whole_comparisons = _completions(loop_round), _comparisons(loop_round)
    # 4 train prompts x k=2 by v1, and one sample each by v1 and the base per eval prompt
    assert len(whole_completions) == 4 * 2 + 2 * 2
    assert Counter(kind for _, kind, *_ in whole_comparisons) == {"train": 4, "eval": 2}
    _forget_generation(loop_round)

    calls: list[tuple[int, int]] = []

    def stop_after_three(done: int, total: int) -> None:
        calls.append((done, total))
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        services.generate_round(loop_round.pk, progress=stop_after_three)
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.FAILED
    # three batches of one train prompt each were stored before the stop, and nothing else
    assert Completion.objects.filter(round_number=loop_round.number).count() == 6
    assert not Comparison.objects.filter(round=loop_round.number).exists()
    assert calls == [(2, 12), (4, 12), (6, 12)]

    with services.in_process():
        services.retry(loop_round)
    calls.clear()
    assert services.generate_round(loop_round.pk, progress=lambda d, t: calls.append((d, t)))
    loop_round.refresh_from_db()
    assert loop_round.state == Round.State.COLLECTING
    # it started from what was stored: one more train prompt, then each side of the eval matches
    assert calls == [(8, 12), (10, 12), (12, 12), (12, 12)]
    keys = Counter(row[:3] for row in _completions(loop_round))
    assert set(keys.values()) == {1} and len(keys) == 12
    assert _completions(loop_round) == whole_completions
    assert _comparisons(loop_round) == whole_comparisons


def test_progress_advances_per_batch_with_the_pace(project: Project) -> None:
    loop_round = _start(project)
    seen: list[tuple[int, int, dict[str, Any]]] = []

    def record(done: int, total: int) -> None:
        row = Round.objects.get(pk=loop_round.pk)
        seen.append((row.progress_done, row.progress_total, row.stats))
        assert (row.progress_done, row.progress_total) == (done, total)

    services.generate_round(loop_round.pk, progress=record)
    assert [done for done, _, _ in seen[:6]] == [2, 4, 6, 8, 10, 12]
    assert all(stats["tokens_per_s"] > 0 for _, _, stats in seen)
    assert seen[0][2]["eta_s"] > 0 and seen[-1][2]["eta_s"] is None


def test_the_round_records_truncation_and_length(project: Project) -> None:
    loop_round = _start(project)
    services.generate_round(loop_round.pk)
    loop_round.refresh_from_db()
    rows = Completion.objects.filter(
        round_number=loop_round.number, model_version_id=loop_round.policy_id, sample_index=1
    )
    assert rows.count() == 4 and all(r.finished is not None and r.token_ids for r in rows)
    train = Completion.objects.filter(
        round_number=loop_round.number, prompt_id__in=loop_round.prompt_ids
    )
    cut = train.filter(finished=False).count()
    assert loop_round.stats["completions"] == 8
    assert loop_round.stats["truncated_share"] == cut / 8
    mean = sum(r.token_count for r in train) / 8
    assert loop_round.stats["mean_tokens"] == pytest.approx(mean, abs=0.01)
    for row in train:
        assert len(row.token_ids) == row.token_count
        # max_new_tokens is 6: a shorter one ended by itself, a cut-off one used them all
        assert row.finished or row.token_count == 6


def test_the_system_prompt_goes_before_each_prompt_when_sampling(
    project: Project, monkeypatch: Any
) -> None:
    from training.core import generation
    from training.models import ProjectLoop

    settings = {**ProjectLoop.of(project).settings, "system_prompt": "Answer in one line."}
    ProjectLoop.store(project, settings=settings)
    real = generation.generate_batches
    seen: list[Any] = []

    def spy(model: Any, prompts: Any, **kwargs: Any) -> Any:
        seen.extend(prompts)
        return real(model, prompts, **kwargs)

    monkeypatch.setattr(generation, "generate_batches", spy)
    loop_round = _start(project)
    services.generate_round(loop_round.pk)
    assert seen and all(p[0] == {"role": "system", "content": "Answer in one line."} for p in seen)
    completion = Completion.objects.filter(round_number=loop_round.number).first()
    assert completion is not None
    assert completion.generation_params["system_prompt"] == "Answer in one line."
