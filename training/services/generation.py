"""Opening a round and sampling its comparisons; the round lookups the views use.

``start_round`` draws the round's prompts and queues ``generate_round``, which samples the
serving version (and, on eval prompts, its opponents) and writes the comparisons once, however
often the task is delivered.
"""

from __future__ import annotations

import functools
import math
import random
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput, NotFound
from annotate.models import Comparison, Completion, Project, Prompt

from ..core.loading import load_model
from ..core.pairing import make_pairs
from ..loop_settings import LoopSettings, base_model_of, loop_settings
from ..models import ModelVersion, Round
from . import dispatch
from .progress import throttled
from .splits import ensure_splits
from .versions import base_version, serving_version

if TYPE_CHECKING:
    from ..core.generation import Sample

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
        base = base_version(project)
        rounds = Round.objects.filter(project=project)
        if not rounds.exists() and base.spec != base_model_of(project):
            # the base may change until the first round uses it
            base.spec = base_model_of(project)
            base.save(update_fields=["spec"])
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
            progress_total=len(prompt_ids) + len(eval_ids),
        )
        dispatch.enqueue(dispatch.GENERATE_ROUND, loop_round.pk)
    return loop_round


# --- Sampling ------------------------------------------------------------------------------


class _SamplingProgress:
    """Prompts sampled so far, written to the round's row (throttled) and to the task."""

    def __init__(
        self, round_id: int, total: int, progress: Callable[[int, int], None] | None
    ) -> None:
        self.round_id = round_id
        self.total = total
        self.progress = progress
        self.done = 0
        self._report = throttled(self._write)

    def advance(self, n: int) -> None:
        self.done += n
        self._report()

    def finish(self) -> None:
        self._report(force=True)

    def _write(self) -> None:
        Round.objects.filter(pk=self.round_id).update(
            progress_done=self.done, progress_total=self.total
        )
        if self.progress is not None:
            self.progress(self.done, self.total)


@dataclass
class _EvalMatch:
    """One eval prompt's sample of the round's policy against an opponent version's."""

    prompt: Prompt
    mine: Sample
    opponent: ModelVersion
    theirs: Sample


def _sample(
    model: Any,
    prompts: list[Prompt],
    k: int,
    ls: LoopSettings,
    seed: int,
    on_prompt_done: Callable[[int], None],
) -> list[list[Sample]]:
    # imported here to keep torch (loaded by the generation module) out of the web process
    from ..core.generation import generate

    per_call = max(1, ls.generation_batch_size // k)
    out: list[list[Sample]] = []
    for start in range(0, len(prompts), per_call):
        chunk = prompts[start : start + per_call]
        out.extend(
            generate(
                model,
                [p.messages for p in chunk],
                k=k,
                temperature=ls.temperature,
                top_p=ls.top_p,
                max_new_tokens=ls.max_new_tokens,
                seed=seed + start,
                batch_size=ls.generation_batch_size,
            )
        )
        on_prompt_done(len(chunk))
    return out


def _opponents(policy: ModelVersion, project: Project) -> list[ModelVersion]:
    """The versions the policy meets on eval prompts: its parent and the base, each once."""
    found = [v for v in (policy.parent, base_version(project)) if v is not None]
    return [v for i, v in enumerate(found) if v not in found[:i]]


def _sample_round(
    loop_round: Round,
    prompts: list[Prompt],
    eval_prompts: list[Prompt],
    ls: LoopSettings,
    seed: int,
    counter: _SamplingProgress,
) -> tuple[list[list[Sample]], list[_EvalMatch]]:
    """The policy's k samples per train prompt, and the eval prompts' matches.

    Eval prompts are shared out among the opponents in turn; each side draws one sample.
    """
    policy = loop_round.policy
    loaded = load_model(policy.spec)
    samples = _sample(loaded, prompts, ls.k, ls, seed, counter.advance)
    if not eval_prompts:
        return samples, []
    eval_seed = seed + _EVAL_SEED_OFFSET
    mine = _sample(loaded, eval_prompts, 1, ls, eval_seed, lambda n: None)
    del loaded  # one model in memory at a time
    opponents = _opponents(policy, loop_round.project)
    matches: list[_EvalMatch] = []
    for j, opponent in enumerate(opponents):
        assigned = [i for i in range(len(eval_prompts)) if i % len(opponents) == j]
        theirs = _sample(
            load_model(opponent.spec),
            [eval_prompts[i] for i in assigned],
            1,
            ls,
            eval_seed,
            counter.advance,
        )
        for i, row in zip(assigned, theirs, strict=True):
            matches.append(_EvalMatch(eval_prompts[i], mine[i][0], opponent, row[0]))
    return samples, matches


# --- Writing the comparisons ---------------------------------------------------------------


def _params(ls: LoopSettings, version: ModelVersion, seed: int) -> dict[str, Any]:
    return {
        "version": version.label,
        "temperature": ls.temperature,
        "top_p": ls.top_p,
        "max_new_tokens": ls.max_new_tokens,
        "seed": seed,
    }


def _completion(
    prompt: Prompt, sample: Sample, version: ModelVersion, params: dict[str, Any]
) -> Completion:
    return Completion.objects.create(
        prompt=prompt,
        text=sample.text,
        source=Completion.Source.MODEL,
        model_version_id=version.pk,
        generation_params=params,
        token_count=sample.token_count,
        logprob=sample.logprob,
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
    )


def _write_comparisons(
    loop_round: Round,
    prompts: list[Prompt],
    samples: list[list[Sample]],
    matches: list[_EvalMatch],
    ls: LoopSettings,
    seed: int,
    scorer: PromptScorer | None = None,
) -> int:
    """The round's completions and comparisons (the caller holds the transaction); how many."""
    policy = loop_round.policy
    params = _params(ls, policy, seed)
    made = 0
    for prompt, group in zip(prompts, samples, strict=True):
        rows = [_completion(prompt, sample, policy, params) for sample in group]
        score = None if scorer is None else functools.partial(scorer, prompt.messages)
        pairs = make_pairs(
            group,
            max_pairs=ls.pairs_per_prompt,
            seed=seed + prompt.pk,
            strategy=ls.pairing,
            score=score,
        )
        for a, b in pairs:
            _comparison(loop_round, prompt, rows[a], rows[b], Comparison.Kind.TRAIN)
            made += 1
    eval_seed = seed + _EVAL_SEED_OFFSET
    for match in matches:
        sides = [
            _completion(match.prompt, sample, version, _params(ls, version, eval_seed))
            for version, sample in ((policy, match.mine), (match.opponent, match.theirs))
        ]
        _comparison(loop_round, match.prompt, sides[0], sides[1], Comparison.Kind.EVAL)
        made += 1
    return made


def generate_round(
    round_id: int,
    progress: Callable[[int, int], None] | None = None,
    scorer: PromptScorer | None = None,
) -> str:
    """Sample the round's completions and make its comparisons; once per round.

    Sampling happens outside any transaction; the rows are written in one transaction that
    first checks, under the round's row lock, that no other delivery wrote them already.
    ``scorer`` is the simulated judge that ``best_vs_worst`` pairing asks for; without it such
    a round fails before sampling.
    """
    loop_round = Round.objects.select_related("project", "policy").get(pk=round_id)
    if loop_round.state != Round.State.GENERATING:
        return f"skipped: round is {loop_round.state}"
    ls = LoopSettings.from_dict(loop_round.settings)
    prompts = list(Prompt.objects.filter(pk__in=loop_round.prompt_ids).order_by("pk"))
    eval_prompts = list(Prompt.objects.filter(pk__in=loop_round.eval_prompt_ids).order_by("pk"))
    counter = _SamplingProgress(round_id, len(prompts) + len(eval_prompts), progress)
    seed = ls.seed + 1000 * loop_round.number
    try:
        if ls.pairing == "best_vs_worst" and scorer is None:
            raise InvalidInput(
                "pairing best_vs_worst needs a simulated judge to score the samples: run the "
                "round with `run_rounds --simulate <rule>`, or choose random or most_different"
            )
        samples, matches = _sample_round(loop_round, prompts, eval_prompts, ls, seed, counter)
        counter.finish()
    except Exception as exc:
        _fail_round(round_id, Round.State.GENERATING, exc)
        raise

    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=round_id)
        if locked.state != Round.State.GENERATING:
            return f"skipped: round is {locked.state}"
        made = _write_comparisons(loop_round, prompts, samples, matches, ls, seed, scorer)
        locked.state = Round.State.COLLECTING
        locked.error = ""
        locked.progress_done = 0
        locked.progress_total = made * loop_round.project.overlap
        locked.save(
            update_fields=["state", "error", "progress_done", "progress_total", "updated_at"]
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
