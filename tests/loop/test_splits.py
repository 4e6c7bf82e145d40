"""Fixed eval and dev splits: drawn once per project, never trained on."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from annotate.datasets.formats import ImportOptions
from annotate.datasets.imports import import_file
from annotate.models import Comparison, Project, Prompt, messages_hash
from tests.factories import ProjectFactory
from training import services
from training.models import Round
from training.services.splits import ensure_splits

from .conftest import judge_round, make_loop_project


def _project_with(n: int) -> Project:
    project = ProjectFactory(name="Split project")
    Prompt.objects.bulk_create(
        Prompt(
            project=project,
            messages=[{"role": "user", "content": f"question {i}"}],
            content_hash=messages_hash([{"role": "user", "content": f"question {i}"}]),
        )
        for i in range(n)
    )
    return project


def _ids(project: Project, split: str) -> set[int]:
    return set(Prompt.objects.filter(project=project, split=split).values_list("pk", flat=True))


def test_it_sets_aside_a_fifth_for_eval_and_a_tenth_for_dev(db: Any) -> None:
    project = _project_with(50)
    assert ensure_splits(project) == {"train": 35, "eval": 10, "dev": 5}


def test_it_draws_once(db: Any) -> None:
    project = _project_with(50)
    ensure_splits(project)
    held_out = (_ids(project, "eval"), _ids(project, "dev"))
    assert ensure_splits(project) == {"train": 35, "eval": 10, "dev": 5}
    assert (_ids(project, "eval"), _ids(project, "dev")) == held_out


def test_it_draws_the_same_prompts_for_the_same_project(db: Any) -> None:
    project = _project_with(40)
    ensure_splits(project)
    first = (_ids(project, "eval"), _ids(project, "dev"))
    Prompt.objects.filter(project=project).update(split=Prompt.Split.TRAIN)
    ensure_splits(project)
    assert (_ids(project, "eval"), _ids(project, "dev")) == first


def test_it_caps_the_eval_split_at_200(db: Any) -> None:
    project = _project_with(1100)
    assert ensure_splits(project) == {"train": 790, "eval": 200, "dev": 110}


def test_it_keeps_a_split_that_an_import_named(db: Any) -> None:
    project = _project_with(30)
    Prompt.objects.filter(pk__in=sorted(_ids(project, "train"))[:3]).update(split="eval")
    assert ensure_splits(project) == {"train": 27, "eval": 3, "dev": 0}


def test_it_puts_later_imports_in_train_unless_the_import_names_a_split(db: Any) -> None:
    project = _project_with(20)
    ensure_splits(project)
    lines = b'{"prompt": "a new one"}\n{"prompt": "another"}\n'
    import_file(project, "prompts", io.BytesIO(lines), "more.jsonl")
    assert ensure_splits(project) == {"train": 16, "eval": 4, "dev": 2}
    dev_lines = b'{"prompt": "for the gate"}\n'
    import_file(
        project, "prompts", io.BytesIO(dev_lines), "dev.jsonl", options=ImportOptions(split="dev")
    )
    assert ensure_splits(project) == {"train": 16, "eval": 4, "dev": 3}


def test_it_never_holds_out_a_prompt_a_round_has_drawn(db: Any) -> None:
    project = _project_with(10)
    drawn = sorted(_ids(project, "train"))[:9]
    Round.objects.create(
        project=project, number=1, policy=services.base_version(project), prompt_ids=drawn
    )
    # one prompt is left and it must stay in train: nothing can be held out
    assert ensure_splits(project) == {"train": 10, "eval": 0, "dev": 0}


def test_it_keeps_one_train_prompt(db: Any) -> None:
    assert ensure_splits(_project_with(1)) == {"train": 1, "eval": 0, "dev": 0}


def _run_round(project: Project) -> Round:
    with services.in_process():
        run = judge_round(project)
        loop_round = run.round
        services.train_round(run.pk)
    return Round.objects.get(pk=loop_round.pk)


@pytest.mark.slow
def test_training_never_sees_dev_or_eval_prompts(
    db: Any, tiny_model_dir: Path, var_dir: Path, monkeypatch: Any
) -> None:
    import training.core.trainer

    project = make_loop_project(tiny_model_dir, n_prompts=20, n_eval=0)
    trained_on: list[str] = []
    real_train = training.core.trainer.train_dpo

    def recording(pairs: list[Any], *args: Any, **kwargs: Any) -> Any:
        trained_on.extend(json.dumps(p.prompt, sort_keys=True) for p in pairs)
        return real_train(pairs, *args, **kwargs)

    monkeypatch.setattr(training.core.trainer, "train_dpo", recording)
    rounds = [_run_round(project) for _ in range(3)]
    assert [r.state for r in rounds] == [Round.State.PROMOTED] * 3

    held_out = Prompt.objects.filter(project=project, split__in=["eval", "dev"])
    assert {p.split for p in held_out} == {"eval", "dev"}
    held_out_ids = {p.pk for p in held_out}
    held_out_texts = {json.dumps(p.messages, sort_keys=True) for p in held_out}
    assert trained_on and not set(trained_on) & held_out_texts
    for loop_round in rounds:
        assert not set(loop_round.prompt_ids) & held_out_ids
        assert set(loop_round.eval_prompt_ids) <= _ids(project, "eval")
    train_comparisons = Comparison.objects.filter(project=project, kind=Comparison.Kind.TRAIN)
    assert not train_comparisons.filter(prompt_id__in=held_out_ids).exists()
