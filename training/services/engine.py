"""Sampling a round's completions from an OpenAI-compatible serving engine.

The ``openai`` generation backend (see ``training.engine_settings``) asks the engine for ``k``
chat completions per prompt, with ``logprobs``. Engines answer text and per-token log-probs, not
token ids, so each text is encoded again with the version's tokenizer: the ids are kept (and
training then scores exactly them, as for the built-in sampler) only when they round-trip,
that is when they decode back to the text and, where the engine listed its tokens, agree with
them one by one. Otherwise the sample keeps no ids and is trained from its text as an imported
completion is; ``Sample.token_ids`` stays empty and the caller counts it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from annotate.models import Completion

from ..engine_settings import engine_model_name
from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round

if TYPE_CHECKING:
    from ..core.data import Message
    from ..core.generation import Batch, Sample

# Choices asked for in one request; ``serve_model`` answers at most 8.
MAX_N = 8
# Generating a long answer on a busy engine can take minutes.
_TIMEOUT_S = 600


class EngineError(RuntimeError):
    """The engine refused a request or answered something that is not a chat completion."""


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of a version (no weights are loaded; torch stays out of the web process)."""
    from transformers import AutoTokenizer

    from ..core.loading import resolve_spec

    return AutoTokenizer.from_pretrained(resolve_spec(spec))


def client(backend: dict[str, Any]) -> Any:
    """An OpenAI client for the backend; its key is read from ``api_key_env`` when named."""
    import openai

    env = backend.get("api_key_env")
    key = os.environ.get(env, "") if env else ""
    if env and not key:
        raise EngineError(f"generation_backend.api_key_env: ${env} is not set on this worker")
    return openai.OpenAI(
        base_url=backend["base_url"], api_key=key or "none", timeout=_TIMEOUT_S, max_retries=2
    )


def _end_id(tokenizer: Any) -> int | None:
    eos = tokenizer.eos_token_id
    return eos if isinstance(eos, int) else None


def retokenize(
    tokenizer: Any, text: str, finished: bool, pieces: Sequence[str] | None
) -> list[int] | None:
    """The ids of an engine's completion when encoding its text reproduces it, else None.

    ``pieces`` are the engine's tokens as text (its ``logprobs.content[].token``), None when it
    listed none. A finished completion ends with the end-of-turn token, as sampled ones do; the
    engine may or may not list that token.
    """
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    if tokenizer.decode(ids) != text:
        return None
    end = _end_id(tokenizer)
    if finished and end is None:
        return None
    if pieces is not None:
        mine = [tokenizer.decode([i]) for i in ids]
        listed = list(pieces)
        if finished and len(listed) == len(mine) + 1:
            listed = listed[:-1]  # the end-of-turn token, as the engine spells it
        if listed != mine:
            return None
    return ids + [end] if finished and end is not None else ids


def _sample(tokenizer: Any, choice: Any) -> Sample:
    from ..core.generation import Sample

    text = (choice.message.content if choice.message else None) or ""
    finished = choice.finish_reason != "length"
    content = choice.logprobs.content if choice.logprobs is not None else None
    pieces = [c.token for c in content] if content is not None else None
    logps = [float(c.logprob) for c in content] if content is not None else []
    ids = retokenize(tokenizer, text, finished, pieces)
    return Sample(
        text=text,
        token_count=len(content) if content is not None else len(ids or []),
        logprob=sum(logps),
        finished=finished,
        token_ids=ids or [],
        token_logprobs=logps,
    )


def _ask(
    api: Any,
    model: str,
    messages: list[Message],
    k: int,
    params: dict[str, Any],
    seed: int,
    tokenizer: Any,
) -> list[Sample]:
    """``k`` samples of one prompt, in requests of at most ``MAX_N`` choices."""
    import openai

    samples: list[Sample] = []
    for part, start in enumerate(range(0, k, MAX_N)):
        n = min(MAX_N, k - start)
        try:
            answer = api.chat.completions.create(
                model=model, messages=messages, n=n, seed=seed + part, logprobs=True, **params
            )
        except openai.APIStatusError as exc:
            raise EngineError(
                f"the engine refused {model!r}: {exc.status_code} {exc.message}"
            ) from None
        except openai.APIError as exc:
            raise EngineError(f"the engine is not reachable: {exc}") from None
        choices = sorted(answer.choices or [], key=lambda c: c.index)
        if len(choices) != n:
            raise EngineError(f"the engine answered {len(choices)} choices, not n={n}")
        samples += [_sample(tokenizer, c) for c in choices]
    return samples


def prompt_seed(seed: int, prompt_index: int) -> int:
    # a prompt's samples depend on the seed and the prompt only, so a resumed round draws the
    # same ones (with an engine that honours seeds)
    return (seed * 1_000_003 + prompt_index * 97) % (2**31)


def engine_params(ls: LoopSettings, version: ModelVersion) -> dict[str, Any]:
    """What a completion's ``generation_params`` add with a serving engine: its model name."""
    backend = ls.generation_backend
    if backend.get("kind") != "openai":
        return {}
    name = engine_model_name(backend.get("model", "{name}"), version.project.slug, version.label)
    return {"backend": "openai", "engine_model": name}


def engine_stats(loop_round: Round, ls: LoopSettings) -> dict[str, Any]:
    """With a serving engine: how many of the round's samples did not re-encode to their text
    (``retokenize_mismatches``); they keep no token ids and are trained from their text."""
    if ls.generation_backend.get("kind") != "openai":
        return {}
    rows = Completion.objects.filter(
        prompt_id__in=[*loop_round.prompt_ids, *loop_round.eval_prompt_ids],
        round_number=loop_round.number,
        generation_params__backend="openai",
    )
    return {"retokenize_mismatches": rows.filter(token_ids__isnull=True).count()}


def engine_batches(
    ls: LoopSettings,
    version: ModelVersion,
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    *,
    k: int,
    seed: int,
    skip: Collection[int] = (),
) -> Iterator[Batch]:
    """Like ``core.generation.generate_batches``, from the engine the loop settings name: one
    batch per prompt, as each is answered.

    Up to ``generation_batch_size // k`` prompts are asked at once (an engine batches them
    itself).
    """
    from ..core.generation import Batch

    backend = ls.generation_backend
    model = engine_params(ls, version)["engine_model"]
    api = client(backend)
    params = {"temperature": ls.temperature, "top_p": ls.top_p, "max_tokens": ls.max_new_tokens}
    concurrency = max(1, ls.generation_batch_size // k)
    todo = [i for i in range(len(prompts)) if i not in set(skip)]
    started = time.perf_counter()
    done = new_tokens = 0
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = [
            (
                i,
                pool.submit(
                    _ask, api, model, prompts[i], k, params, prompt_seed(seed, i), tokenizer
                ),
            )
            for i in todo
        ]
        for i, future in futures:
            samples = future.result()
            done += len(samples)
            new_tokens += sum(s.token_count for s in samples)
            yield Batch(
                samples=[(i, j, s) for j, s in enumerate(samples)],
                completed={i: samples},
                sequences_done=done,
                sequences_total=k * len(todo),
                new_tokens=new_tokens,
                seconds=time.perf_counter() - started,
            )
    finally:
        # a failed prompt or a stopped delivery asks for nothing more
        pool.shutdown(wait=True, cancel_futures=True)
