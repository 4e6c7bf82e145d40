"""The uncertainty strategy's margins: scored on the worker with the serving version against the
base, written on the open comparisons, queued after a promotion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from annotate.celery import app
from annotate.models import Comparison, Completion, Project, Prompt
from training import tasks
from training.core.loading import load_model
from training.core.scoring import sequence_logprobs
from training.core.tiny import save_tiny, tiny_llama, word_tokenizer
from training.models import ModelVersion
from training.services import active, promote
from training.services.versions import base_version

from .conftest import VOCAB


@pytest.fixture
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model, other weights, same tokenizer: the promoted policy."""
    tokenizer = word_tokenizer(VOCAB)
    return save_tiny(tiny_llama(tokenizer, seed=7), tokenizer, tmp_path_factory.mktemp("pol") / "p")


def _pairs(project: Project, n: int) -> list[Comparison]:
    out = []
    for i, prompt in enumerate(Prompt.objects.filter(project=project)[:n]):
        a = Completion.objects.create(prompt=prompt, text="yes good answer")
        b = Completion.objects.create(prompt=prompt, text="no bad", token_ids=None)
        if i % 2:
            b.text = ""
            b.save()
        out.append(
            Comparison.objects.create(
                project=project, prompt=prompt, completion_a=a, completion_b=b
            )
        )
    return out


def _serve(project: Project, spec: Path) -> ModelVersion:
    base = base_version(project)
    version = ModelVersion.objects.create(project=project, number=1, spec=str(spec), parent=base)
    promote(version)
    return version


def test_the_task_writes_each_open_pair_s_margin_in_batches(
    loop_project: Project, policy_dir: Path, tiny_model_dir: Path
) -> None:
    pairs = _pairs(loop_project, 5)
    full = pairs[4]
    Comparison.objects.filter(pk=full.pk).update(judgment_count=loop_project.overlap)
    _serve(loop_project, policy_dir)

    written = active.score_pair_margins(loop_project.pk, batch=2)

    assert written == 4
    policy, reference = load_model(str(policy_dir)), load_model(str(tiny_model_dir))
    for pair in pairs[:4]:
        pair.refresh_from_db()
        ids = [
            policy[1](c.text, add_special_tokens=False)["input_ids"] or [policy[1].eos_token_id]
            for c in (pair.completion_a, pair.completion_b)
        ]
        prompts = [pair.prompt.messages] * 2
        log_pi = sequence_logprobs(policy[0], policy[1], prompts, ids)
        log_ref = sequence_logprobs(reference[0], reference[1], prompts, ids)
        want = (log_pi[0] - log_ref[0]) - (log_pi[1] - log_ref[1])
        assert pair.policy_margin == pytest.approx(want, abs=1e-4)
        assert pair.policy_margin != 0.0
    full.refresh_from_db()
    assert full.policy_margin is None


def test_the_celery_task_scores_and_the_base_clears_the_margins(
    loop_project: Project, policy_dir: Path
) -> None:
    pairs = _pairs(loop_project, 2)
    version = _serve(loop_project, policy_dir)
    assert tasks.generate_pair_margins(loop_project.pk) == 2
    assert all(
        m is not None
        for m in Comparison.objects.filter(pk__in=[p.pk for p in pairs]).values_list(
            "policy_margin", flat=True
        )
    )
    # rolled back to the base: policy and reference are one model, every margin would be zero
    promote(base_version(loop_project))
    assert version.pk and tasks.generate_pair_margins(loop_project.pk) == 0
    assert set(Comparison.objects.values_list("policy_margin", flat=True)) == {None}


def test_promotion_queues_the_scoring_after_the_commit_under_uncertainty_only(
    loop_project: Project,
    policy_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    sent: list[tuple[str, list[Any]]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args=None, *a, **k: sent.append((name, list(args or ())))
    )
    base = base_version(loop_project)
    with django_capture_on_commit_callbacks(execute=True):
        version = ModelVersion.objects.create(
            project=loop_project, number=1, spec=str(policy_dir), parent=base
        )
        promote(version)
    assert sent == []
    loop_project.pair_selection = Project.PairSelection.UNCERTAINTY
    loop_project.save()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        promote(base)
    assert sent == []
    for callback in callbacks:
        callback()
    assert sent == [("training.tasks.generate_pair_margins", [loop_project.pk])]
