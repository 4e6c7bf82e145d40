"""The policy margins behind the ``uncertainty`` pair selection (``annotate.selection``).

After a version is promoted, and after a round's pairs are sampled, the worker scores the
project's open comparisons under the serving policy and writes ``Comparison.policy_margin``:

    margin = (log pi(a|x) - log ref(a|x)) - (log pi(b|x) - log ref(b|x))

the difference of the DPO implicit rewards of completion A and completion B, without the factor
beta (a positive constant that scales every margin alike and so does not change which pairs are
nearest zero). ``pi`` is the serving version, ``ref`` the root of its chain of versions (the
DPO reference); log-probabilities are summed over each completion's tokens
(`training.core.scoring`). A margin near zero is a pair the policy cannot tell apart: a judgment
there teaches it the most. While the root itself serves, every margin would be zero, so the
margins are cleared instead.

Scoring runs on the worker (``generate`` queue, where the models live); the web process only
reads the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction

from annotate.models import Comparison, Project

from ..core.data import with_system_prompt
from ..loop_settings import loop_settings
from ..models import ModelVersion
from . import dispatch

SCORE_PAIR_MARGINS = "training.tasks.generate_pair_margins"
# Comparisons scored and written per batch.
BATCH = 64


def queue_scoring(project: Project) -> None:
    """Queue the margin scoring of ``project`` once the transaction commits, when the project
    orders its pairs by uncertainty."""
    if project.pair_selection == Project.PairSelection.UNCERTAINTY:
        dispatch.enqueue(SCORE_PAIR_MARGINS, project.pk)


def open_pairs(project: Project) -> Any:
    """The comparisons the queue may still hand out: not full, not answered gold, no repeat."""
    return Comparison.objects.filter(
        Comparison.work(), project=project, judgment_count__lt=project.overlap
    )


def score_pair_margins(project_id: int, *, batch: int = BATCH, models: Any = None) -> int:
    """Write the serving policy's margin on each open comparison of the project; returns how
    many were written (0 when the base serves: the margins are then cleared).

    Args:
        batch: comparisons scored and saved together.
        models: ``(policy, reference)``, each a ``(model, tokenizer)``, already loaded; by
            default both are loaded from the versions' specs.
    """
    project = Project.objects.get(pk=project_id)
    policy_version = ModelVersion.objects.filter(
        project=project, state=ModelVersion.State.SERVING
    ).first()
    reference_version = policy_version
    while reference_version is not None and reference_version.parent_id is not None:
        reference_version = reference_version.parent
    if models is None and (
        policy_version is None
        or reference_version is None
        or policy_version.spec == reference_version.spec
    ):
        open_pairs(project).exclude(policy_margin=None).update(policy_margin=None)
        return 0
    if models is None:
        from ..core.loading import load_model  # torch stays out of the web process

        assert policy_version is not None and reference_version is not None
        models = (load_model(policy_version.spec), load_model(reference_version.spec))
    policy, reference = models
    system_prompt = loop_settings(project).system_prompt
    ids = list(open_pairs(project).order_by("pk").values_list("pk", flat=True))
    written = 0
    for start in range(0, len(ids), batch):
        rows = list(
            Comparison.objects.filter(pk__in=ids[start : start + batch])
            .select_related("prompt", "completion_a", "completion_b")
            .order_by("pk")
        )
        margins = pair_margins(policy, reference, rows, system_prompt)
        for row, margin in zip(rows, margins, strict=True):
            row.policy_margin = margin
        with transaction.atomic():
            Comparison.objects.bulk_update(rows, ["policy_margin"])
        written += len(rows)
    return written


def pair_margins(
    policy: Any, reference: Any, rows: Sequence[Comparison], system_prompt: str = ""
) -> list[float]:
    """The margin of A over B of each comparison (see the module docstring)."""
    from ..core.scoring import sequence_logprobs

    prompts = [with_system_prompt(row.prompt.messages, system_prompt) for row in rows]
    tokenizer = policy[1]
    completions = [
        ids
        for row in rows
        for ids in (
            _token_ids(tokenizer, row.completion_a),
            _token_ids(tokenizer, row.completion_b),
        )
    ]
    doubled = [p for p in prompts for _ in range(2)]
    log_pi = sequence_logprobs(policy[0], tokenizer, doubled, completions)
    log_ref = sequence_logprobs(reference[0], reference[1], doubled, completions)
    reward = [p - r for p, r in zip(log_pi, log_ref, strict=True)]
    return [reward[2 * i] - reward[2 * i + 1] for i in range(len(rows))]


def _token_ids(tokenizer: Any, completion: Any) -> list[int]:
    """The completion's sampled token ids, or its text tokenized; an empty completion is the
    end-of-sequence token alone."""
    ids = list(completion.token_ids or [])
    if not ids and completion.text:
        ids = list(tokenizer(completion.text, add_special_tokens=False)["input_ids"])
    if not ids:
        eos = tokenizer.eos_token_id
        ids = [eos if eos is not None else 0]
    return ids
