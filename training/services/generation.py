"""Opening a round and sampling its comparisons; the round lookups the views use.

``start_round`` draws the round's prompts and queues ``generate_round``, which samples the
serving version (and, on eval prompts, its opponents), stores each batch's completions as it
goes, and writes the comparisons once, however often the task is delivered or stopped.
"""

from __future__ import annotations

import functools
import math
import random
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput, NotFound
from annotate.models import Comparison, Completion, Project, Prompt, content_random_key

from ..core.data import with_system_prompt
from ..core.loading import load_model
from ..core.pairing import make_pairs
from ..loop_settings import LoopSettings, loop_settings
from ..models import ModelVersion, Round
from . import dispatch
from .engine import engine_batches, engine_params, engine_stats, load_tokenizer
from .round_stats import sample_stats
from .splits import ensure_splits
from .versions import base_version, current_base_version, serving_version

if TYPE_CHECKING:
    from ..core.generation import Batch, Sample

# Added to a round's seed for the one sample per eval prompt that each side of a match draws.
_EVAL_SEED_OFFSET = 500


# scorer(messages, texts) -> a score per text, higher is better: a simulated judge's, which
# "best_vs_worst" pairing needs
PromptScorer = Callable[[list[dict[str, Any]], list[str]], Sequence[float]]


# --- Opening a round ----------------------------------------------------------------------


def _draw(ids: list[int], used: Counter[int], n: int, rng: random.Random) -> list[int]:
    """``n`` ids, least used first: no repeats until every id has been used as often."""
    keyed = sorted(ids, key=lambda i: (used[i], rng.random()))
    return sorted(keyed[:n])


def start_round(project: Project) -> Round:
    """Open the project's next round with its serving version; sampling runs in a task.

    Raises:
        Conflict: a round is still open.
        InvalidInput: the project has no train prompts.
    """
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        open_round = Round.objects.filter(project=project, state__in=Round.OPEN_STATES).first()
        if open_round is not None:
            raise Conflict(f"Round {open_round.number} is still {open_round.get_state_display()}.")
        ls = loop_settings(project)
        current_base_version(project)  # the base may change until the first round uses it
        rounds = Round.objects.filter(project=project)
        policy = serving_version(project)
        number = (rounds.aggregate(n=Max("number"))["n"] or 0) + 1
        ensure_splits(project)
        rng = random.Random(f"{project.pk}-{number}-{ls.seed}")
        used: Counter[int] = Counter()
        for ids in rounds.values_list("prompt_ids", flat=True):
            used.update(ids)
        train_ids = list(
            Prompt.objects.filter(project=project, split=Prompt.Split.TRAIN).values_list(
                "pk", flat=True
            )
        )
        if not train_ids:
            raise InvalidInput("The project has no train prompts: import prompts first.")
        prompt_ids = _draw(train_ids, used, ls.prompts_per_round, rng)
        eval_ids: list[int] = []
        if policy.number > 0 and ls.eval_share > 0:
            n_train = len(prompt_ids) * ls.pairs_per_prompt
            n_eval = math.ceil(n_train * ls.eval_share / (1 - ls.eval_share))
            pool = list(
                Prompt.objects.filter(project=project, split=Prompt.Split.EVAL).values_list(
                    "pk", flat=True
                )
            )
            eval_ids = sorted(rng.sample(pool, min(n_eval, len(pool))))
        loop_round = Round.objects.create(
            project=project,
            number=number,
            policy=policy,
            settings=ls.to_dict(),
            prompt_ids=prompt_ids,
            eval_prompt_ids=eval_ids,
            # completions: the policy's k per train prompt, two per eval prompt
            progress_total=ls.k * len(prompt_ids) + 2 * len(eval_ids),
        )
        dispatch.enqueue(dispatch.GENERATE_ROUND, loop_round.pk)
    return loop_round


# --- Sampling ------------------------------------------------------------------------------


class _RoundWriter:
    """Stores each batch's completions as soon as it is sampled and reports the round's progress.

    Progress counts completions (rows) of the round: the policy's k per train prompt and two per
    eval prompt (the policy's and its opponent's); rows a stopped delivery already stored count
    as done. The pace (tokens/s, seconds left) is this delivery's.
    """

    def __init__(
        self,
        loop_round: Round,
        ls: LoopSettings,
        seed: int,
        done: int,
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.round = loop_round
        self.ls = ls
        self.seed = seed
        self.done = done
        self.total = total
        self.progress = progress
        self.stats = dict(loop_round.stats)
        self.rows = 0
        self.tokens = 0
        self.seconds = 0.0

    def stream(
        self,
        batches: Iterator[Batch],
        prompts: list[Prompt],
        version: ModelVersion,
        seed: int,
    ) -> None:
        """Store the completed prompts of each batch (``prompts`` indexed as the batches are)."""
        params = _params(self.ls, version, seed)
        seen_seconds, seen_tokens = 0.0, 0
        for batch in batches:
            rows = [
                _completion(prompts[i], j, sample, version, params, self.round.number)
                for i, samples in batch.completed.items()
                for j, sample in enumerate(samples)
            ]
            # the unique key skips rows that a concurrent delivery stored first
            Completion.objects.bulk_create(rows, ignore_conflicts=True)
            self.seconds += batch.seconds - seen_seconds
            self.tokens += batch.new_tokens - seen_tokens
            seen_seconds, seen_tokens = batch.seconds, batch.new_tokens
            self.rows += len(batch.samples)
            self.done = min(self.total, self.done + len(batch.samples))
            self.report()

    def report(self, final: bool = False) -> None:
        pace = self.rows / self.seconds if self.seconds > 0 else 0.0
        self.stats["tokens_per_s"] = round(self.tokens / self.seconds, 1) if self.seconds else None
        left = self.total - self.done
        # shown to a tenth of a second; rows still to sample never read as no time left
        self.stats["eta_s"] = (
            None if final or not pace else max(0.1, round(left / pace, 1)) if left else 0.0
        )
        # updated_at is the round's heartbeat while it samples (see ``recovery``)
        Round.objects.filter(pk=self.round.pk).update(
            progress_done=self.done,
            progress_total=self.total,
            stats=self.stats,
            updated_at=timezone.now(),
        )
        if self.progress is not None:
            self.progress(self.done, self.total)


class _Models:
    """The model of one version at a time, loaded on first use (a resumed round may need none);
    with a serving engine, only its tokenizer."""

    def __init__(self) -> None:
        self.version_id: int | None = None
        self.loaded: Any = None
        self.tokenizers: dict[int, Any] = {}

    def tokenizer_of(self, version: ModelVersion) -> Any:
        if version.pk not in self.tokenizers:
            self.tokenizers[version.pk] = load_tokenizer(version.spec)
        return self.tokenizers[version.pk]

    def of(self, version: ModelVersion) -> Any:
        if self.version_id != version.pk:
            self.loaded = None  # one model in memory at a time
            self.loaded = load_model(version.spec)
            self.version_id = version.pk
        return self.loaded


def _sample(
    writer: _RoundWriter,
    models: _Models,
    version: ModelVersion,
    prompts: list[Prompt],
    k: int,
    seed: int,
    stored: set[tuple[int, int, int]],
) -> None:
    """Sample and store ``version``'s k completions of the ``prompts`` that lack them."""
    skip = {
        i
        for i, prompt in enumerate(prompts)
        if all((prompt.pk, version.pk, j) in stored for j in range(k))
    }
    if len(skip) == len(prompts):
        return
    ls = writer.ls
    messages = [with_system_prompt(p.messages, ls.system_prompt) for p in prompts]
    if ls.generation_backend.get("kind") == "openai":
        tokenizer = models.tokenizer_of(version)
        batches = engine_batches(ls, version, tokenizer, messages, k=k, seed=seed, skip=skip)
        writer.stream(batches, prompts, version, seed)
        return
    # imported here to keep torch (loaded by the generation module) out of the web process
    from ..core.generation import generate_batches

    batches = generate_batches(
        models.of(version),
        messages,
        k=k,
        temperature=ls.temperature,
        top_p=ls.top_p,
        max_new_tokens=ls.max_new_tokens,
        seed=seed,
        batch_size=ls.generation_batch_size,
        skip=skip,
    )
    writer.stream(batches, prompts, version, seed)


def _opponents(policy: ModelVersion, project: Project) -> list[ModelVersion]:
    """The versions the policy meets on eval prompts: its parent and the base, each once."""
    found = [v for v in (policy.parent, base_version(project)) if v is not None]
    return [v for i, v in enumerate(found) if v not in found[:i]]


def _assigned(eval_prompts: list[Prompt], opponents: list[ModelVersion], j: int) -> list[Prompt]:
    """The eval prompts of opponent ``j``: they are shared out among the opponents in turn."""
    return [p for i, p in enumerate(eval_prompts) if i % len(opponents) == j]


def _stored(loop_round: Round, prompts: list[Prompt]) -> set[tuple[int, int, int]]:
    """(prompt, version, sample index) of the round's completions already stored."""
    rows = Completion.objects.filter(
        prompt__in=[p.pk for p in prompts], round_number=loop_round.number
    ).values_list("prompt_id", "model_version_id", "sample_index")
    return {(p, v, j) for p, v, j in rows if v is not None and j is not None}


def _sample_round(
    loop_round: Round,
    prompts: list[Prompt],
    eval_prompts: list[Prompt],
    writer: _RoundWriter,
    stored: set[tuple[int, int, int]],
) -> None:
    """Store the policy's k samples per train prompt and both sides of each eval prompt's match.

    Each side of a match draws one sample; what a stopped delivery stored is not sampled again.
    """
    policy, ls, seed = loop_round.policy, writer.ls, writer.seed
    models = _Models()
    _sample(writer, models, policy, prompts, ls.k, seed, stored)
    if not eval_prompts:
        return
    eval_seed = seed + _EVAL_SEED_OFFSET
    _sample(writer, models, policy, eval_prompts, 1, eval_seed, stored)
    opponents = _opponents(policy, loop_round.project)
    for j, opponent in enumerate(opponents):
        assigned = _assigned(eval_prompts, opponents, j)
        _sample(writer, models, opponent, assigned, 1, eval_seed, stored)


# --- Writing the comparisons ---------------------------------------------------------------


def _params(ls: LoopSettings, version: ModelVersion, seed: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "version": version.label,
        "temperature": ls.temperature,
        "top_p": ls.top_p,
        "max_new_tokens": ls.max_new_tokens,
        "seed": seed,
    }
    if ls.system_prompt:
        # training puts the same system message before the prompt
        params["system_prompt"] = ls.system_prompt
    return {**params, **engine_params(ls, version)}


def _completion(
    prompt: Prompt,
    sample_index: int,
    sample: Sample,
    version: ModelVersion,
    params: dict[str, Any],
    round_number: int,
) -> Completion:
    from_engine = "engine_model" in params
    return Completion(
        prompt=prompt,
        text=sample.text,
        source=Completion.Source.MODEL,
        model_version_id=version.pk,
        generation_params=params,
        token_count=sample.token_count,
        # an engine that lists no log-probs leaves the sum unknown
        logprob=None if from_engine and not sample.token_logprobs else sample.logprob,
        finished=sample.finished,
        # an engine's sample keeps ids only when its text re-encodes to them (``engine``)
        token_ids=(sample.token_ids or None) if from_engine else sample.token_ids,
        round_number=round_number,
        sample_index=sample_index,
    )


def _as_sample(row: Completion) -> Sample:
    # imported here to keep torch (loaded by the generation module) out of the web process
    from ..core import generation

    return generation.Sample(
        text=row.text,
        token_count=row.token_count or 0,
        logprob=row.logprob or 0.0,
        finished=row.finished is not False,
        token_ids=list(row.token_ids or []),
    )


def _comparison(
    loop_round: Round, prompt: Prompt, a: Completion, b: Completion, kind: str
) -> Comparison:
    return Comparison.objects.create(
        project=loop_round.project,
        prompt=prompt,
        completion_a=a,
        completion_b=b,
        round=loop_round.number,
        kind=kind,
        random_key=content_random_key(prompt.content_hash, a.text, b.text, loop_round.number),
    )


def _write_comparisons(
    loop_round: Round,
    prompts: list[Prompt],
    eval_prompts: list[Prompt],
    ls: LoopSettings,
    seed: int,
    scorer: PromptScorer | None = None,
) -> int:
    """The round's comparisons from its stored completions (the caller holds the transaction).

    Returns how many were made.
    """
    policy = loop_round.policy
    rows: dict[tuple[int, int | None], list[Completion]] = {}
    for row in Completion.objects.filter(
        prompt__in=[p.pk for p in prompts + eval_prompts], round_number=loop_round.number
    ).order_by("sample_index"):
        rows.setdefault((row.prompt_id, row.model_version_id), []).append(row)
    made = 0
    for prompt in prompts:
        group = rows[(prompt.pk, policy.pk)]
        samples = [_as_sample(row) for row in group]
        score = None if scorer is None else functools.partial(scorer, prompt.messages)
        pairs = make_pairs(
            samples,
            max_pairs=ls.pairs_per_prompt,
            seed=seed + prompt.pk,
            strategy=ls.pairing_strategy(judge_at_hand=scorer is not None),
            score=score,
        )
        for a, b in pairs:
            _comparison(loop_round, prompt, group[a], group[b], Comparison.Kind.TRAIN)
            made += 1
    if eval_prompts:
        opponents = _opponents(policy, loop_round.project)
        for j, opponent in enumerate(opponents):
            for prompt in _assigned(eval_prompts, opponents, j):
                mine = rows[(prompt.pk, policy.pk)][0]
                theirs = rows[(prompt.pk, opponent.pk)][0]
                _comparison(loop_round, prompt, mine, theirs, Comparison.Kind.EVAL)
                made += 1
    return made


def generate_round(
    round_id: int,
    progress: Callable[[int, int], None] | None = None,
    scorer: PromptScorer | None = None,
) -> str:
    """Sample the round's completions and make its comparisons; once per round.

    Each batch's completions are stored as soon as it is sampled, keyed by round, prompt,
    version and sample index, so a delivery that stops (killed worker, error) keeps its work and
    the next one samples only what is missing. The comparisons are made once every completion
    is stored, in one transaction that first checks, under the round's row lock, that no other
    delivery made them already. ``scorer`` is the simulated judge that ``best_vs_worst``
    pairing asks for; without it such a round fails before sampling.
    """
    loop_round = Round.objects.select_related("project", "policy").get(pk=round_id)
    if loop_round.state != Round.State.GENERATING:
        return f"skipped: round is {loop_round.state}"
    ls = LoopSettings.from_dict(loop_round.settings)
    prompts = list(Prompt.objects.filter(pk__in=loop_round.prompt_ids).order_by("pk"))
    eval_prompts = list(Prompt.objects.filter(pk__in=loop_round.eval_prompt_ids).order_by("pk"))
    seed = ls.seed + 1000 * loop_round.number
    stored = _stored(loop_round, prompts + eval_prompts)
    total = ls.k * len(prompts) + 2 * len(eval_prompts)
    writer = _RoundWriter(loop_round, ls, seed, min(len(stored), total), total, progress)
    try:
        if ls.pairing == "best_vs_worst" and scorer is None:
            raise InvalidInput(
                "pairing best_vs_worst needs a simulated judge to score the samples: run the "
                "round with `run_rounds --simulate <rule>`, or choose random or most_different"
            )
        _sample_round(loop_round, prompts, eval_prompts, writer, stored)
        writer.report(final=True)
    except Exception as exc:
        _fail_round(round_id, Round.State.GENERATING, exc)
        raise

    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=round_id)
        if locked.state != Round.State.GENERATING:
            return f"skipped: round is {locked.state}"
        made = _write_comparisons(loop_round, prompts, eval_prompts, ls, seed, scorer)
        locked.state = Round.State.COLLECTING
        locked.error = ""
        locked.progress_done = 0
        locked.progress_total = made * loop_round.project.overlap
        locked.stats = {**locked.stats, **sample_stats(locked), **engine_stats(locked, ls)}
        locked.save(
            update_fields=[
                "state",
                "error",
                "progress_done",
                "progress_total",
                "stats",
                "updated_at",
            ]
        )
    return f"{made} comparisons"


def _fail_round(round_id: int, expected: str, exc: BaseException) -> None:
    with transaction.atomic():
        Round.objects.filter(pk=round_id, state=expected).update(
            state=Round.State.FAILED, error=_describe(exc), updated_at=timezone.now()
        )


def _describe(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[:4000]


# --- Lookups for views ---------------------------------------------------------------------


def get_round(project: Project, round_id: int | str) -> Round:
    try:
        return Round.objects.select_related("policy").get(project=project, pk=int(round_id))
    except (Round.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such round.") from None


def current_round(project: Project) -> Round | None:
    return (
        Round.objects.filter(project=project).select_related("policy").order_by("-number").first()
    )
