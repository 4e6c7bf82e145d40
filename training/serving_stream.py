"""``serve_model``'s streamed answers: OpenAI chunks made as the tokens are sampled.

Chunks carry one choice each: first every choice's role, then text pieces interleaved by
``index`` as the choices grow together, each choice's ``finish_reason`` after its last piece,
and with ``stream_options.include_usage`` a final chunk with no choices and the usage. The
pieces of a choice add up to the text the same request answers without streaming.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .core.streaming import Finished, stream_samples

if TYPE_CHECKING:  # the server imports this module when a request streams
    from .serving_chat import ChatRequest


def stream_chunks(request: ChatRequest) -> Iterator[dict[str, Any]]:
    head = {**request.head(), "object": "chat.completion.chunk"}

    def chunk(index: int, delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    loaded = request.loaded
    completion_tokens = 0
    # held while the answer is written out: the model samples one request at a time
    with loaded.lock:
        prompt_tokens = request.prompt_tokens()
        for i in range(request.n):
            yield chunk(i, {"role": "assistant", "content": ""})
        for event in stream_samples(
            loaded.model,
            loaded.tokenizer,
            request.messages,
            n=request.n,
            temperature=request.temperature,
            top_p=request.top_p,
            max_new_tokens=request.max_tokens,
            seed=request.seed,
        ):
            if isinstance(event, Finished):
                completion_tokens += event.token_count
                yield chunk(event.index, {}, "stop" if event.finished else "length")
            else:
                yield chunk(event.index, {"content": event.text})
    if request.include_usage:
        yield {**head, "choices": [], "usage": request.usage(prompt_tokens, completion_tokens)}
