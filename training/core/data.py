"""Preference pairs: reading them from JSONL and turning them into token ids."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Message = dict[str, str]


class DataError(ValueError):
    """A user-supplied file has a bad row; the message names the file and line."""


@dataclass
class PreferencePair:
    """One human (or judge) preference between two completions of the same prompt.

    ``prompt`` is a list of chat messages (formatted with the tokenizer's chat template) or, for
    TRL's plain-string format, raw text used as it is. ``chosen`` and ``rejected`` are the two
    assistant replies. ``weight`` multiplies this pair's loss. ``label_smoothing`` is the
    probability that the label is wrong (conservative DPO; the sigmoid loss only), for example
    the share of annotators who disagreed.

    ``*_finished`` says whether the model ended that reply itself (True) or was cut off by its
    token budget (False); None means unknown. ``*_token_ids`` are the ids the model sampled for
    the reply, end-of-turn included when it ended; when given they are trained verbatim instead
    of re-encoding the text. See `tokenize_pair`.
    """

    prompt: list[Message] | str
    chosen: str
    rejected: str
    weight: float = 1.0
    label_smoothing: float = 0.0
    chosen_finished: bool | None = None
    rejected_finished: bool | None = None
    chosen_token_ids: list[int] | None = None
    rejected_token_ids: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "weight": self.weight,
            "label_smoothing": self.label_smoothing,
            "chosen_finished": self.chosen_finished,
            "rejected_finished": self.rejected_finished,
            "chosen_token_ids": self.chosen_token_ids,
            "rejected_token_ids": self.rejected_token_ids,
        }


@dataclass
class TokenizedPair:
    """Token ids of one pair: the shared prompt, then each completion (ending in end-of-turn)."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    weight: float = 1.0
    label_smoothing: float = 0.0
    # Reference-model log-probabilities, filled in once per run before training.
    ref_chosen_logp: float | None = None
    ref_rejected_logp: float | None = None

    @property
    def num_tokens(self) -> int:
        """Tokens as the model sees them when the prompt is shared: prompt + chosen + rejected."""
        return len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def pair_tokens(self) -> int:
        """Tokens of the two sequences prompt + chosen and prompt + rejected (the usual count,
        used for tokens/s so that numbers compare across trainers)."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


def with_system_prompt(messages: list[Message], system_prompt: str) -> list[Message]:
    """``messages`` after a system message ``system_prompt``, unless it is empty or the chat
    already opens with a system message of its own."""
    if not system_prompt or (messages and messages[0].get("role") == "system"):
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def _messages(value: Any, field: str, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: {field!r} must be a non-empty list of messages")
    out: list[Message] = []
    for i, message in enumerate(value):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{where}: {field}[{i}] must be an object with string 'role' and 'content'"
            )
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _completion(value: Any, field: str, where: str) -> str:
    if isinstance(value, str):
        return value
    messages = _messages(value, field, where)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise DataError(f"{where}: {field!r} must be a string or a list with one assistant message")
    return messages[0]["content"]


def _finished(row: dict[str, Any], field: str, where: str) -> bool | None:
    value = row.get(field)
    if value is not None and not isinstance(value, bool):
        raise DataError(f"{where}: {field!r} must be true, false or null")
    return value


def _token_ids(row: dict[str, Any], field: str, where: str) -> list[int] | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        raise DataError(f"{where}: {field!r} must be a list of non-negative token ids or null")
    return list(value)


def pair_from_row(row: Any, where: str = "row") -> PreferencePair:
    """Parse one row in TRL's conversational or plain-string format, or our export's.

    Conversational: ``prompt`` is a message list, ``chosen``/``rejected`` are one-message lists
    (or strings). Plain: all three are strings, and the prompt is used as raw text.
    An optional numeric ``weight`` (default 1.0) and ``label_smoothing`` (default 0.0, at most
    0.5) are kept, and so are the optional ``chosen_finished``/``rejected_finished`` (true,
    false or null) and ``chosen_token_ids``/``rejected_token_ids`` (the sampled ids, or null).
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object")
    for name in ("prompt", "chosen", "rejected"):
        if name not in row:
            raise DataError(f"{where}: missing field {name!r}")
    chosen = _completion(row["chosen"], "chosen", where)
    rejected = _completion(row["rejected"], "rejected", where)
    prompt_value = row["prompt"]
    prompt: list[Message] | str
    if isinstance(prompt_value, str):
        plain = isinstance(row["chosen"], str) and isinstance(row["rejected"], str)
        prompt = prompt_value if plain else [{"role": "user", "content": prompt_value}]
    else:
        prompt = _messages(prompt_value, "prompt", where)
    weight = row.get("weight", 1.0)
    if weight is None:
        weight = 1.0
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
        raise DataError(f"{where}: 'weight' must be a non-negative number")
    smoothing = row.get("label_smoothing")
    if smoothing is None:
        smoothing = 0.0
    if (
        isinstance(smoothing, bool)
        or not isinstance(smoothing, int | float)
        or not 0.0 <= smoothing <= 0.5
    ):
        raise DataError(f"{where}: 'label_smoothing' must be a number between 0 and 0.5")
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        weight=float(weight),
        label_smoothing=float(smoothing),
        chosen_finished=_finished(row, "chosen_finished", where),
        rejected_finished=_finished(row, "rejected_finished", where),
        chosen_token_ids=_token_ids(row, "chosen_token_ids", where),
        rejected_token_ids=_token_ids(row, "rejected_token_ids", where),
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """Yield ("<path>, line n", parsed row) for each non-blank line, reading as it goes."""
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {number}"
                try:
                    yield where, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: invalid JSON ({exc.msg})") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text") from exc


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """Read preference pairs from a JSONL file (blank lines skipped)."""
    path = Path(path)
    pairs = [pair_from_row(row, where) for where, row in _jsonl_rows(path)]
    if not pairs:
        raise DataError(f"{path}: no preference pairs")
    return pairs


def read_prompts(path: str | Path) -> list[list[Message]]:
    """Read prompts from JSONL: each row a message list, or an object with a ``prompt`` (or
    ``messages``) field holding a message list or a string (taken as one user message)."""
    path = Path(path)
    prompts = []
    for where, row in _jsonl_rows(path):
        if isinstance(row, dict):
            key = "prompt" if "prompt" in row else "messages" if "messages" in row else None
            if key is None:
                raise DataError(f"{where}: missing field 'prompt'")
            row = row[key]
        if isinstance(row, str):
            prompts.append([{"role": "user", "content": row}])
        else:
            prompts.append(_messages(row, "prompt", where))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def _ids(
    tokenizer: Any, value: list[Message] | str, add_generation_prompt: bool = False
) -> list[int]:
    if isinstance(value, str):
        return list(tokenizer(value)["input_ids"])
    encoded = tokenizer.apply_chat_template(
        value, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(encoded["input_ids"])


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _end_of_turn(tokenizer: Any, ids: list[int], after: int) -> int | None:
    """Index of the last end-of-turn (EOS) id at or beyond ``after``, or None."""
    eos = tokenizer.eos_token_id
    for i in range(len(ids) - 1, after - 1, -1):
        if ids[i] == eos:
            return i
    return None


def _with_completion(
    tokenizer: Any,
    prompt: list[Message] | str,
    prompt_ids: list[int],
    text: str,
    finished: bool | None,
    token_ids: list[int] | None,
) -> list[int]:
    """Prompt and one completion as the model sees them (the prompt part may differ slightly
    from ``prompt_ids`` where token merges or the template change it)."""
    if token_ids is not None:
        # what was sampled, exactly: re-encoding the text can give other ids
        vocab = len(tokenizer)
        bad = [i for i in token_ids if i >= vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the tokenizer's vocabulary ({vocab})")
        return prompt_ids + token_ids
    if isinstance(prompt, str):
        eos = tokenizer.eos_token or ""
        if finished is not False and not text.endswith(eos):
            text += eos
        return _ids(tokenizer, prompt + text)
    full = _ids(tokenizer, [*prompt, {"role": "assistant", "content": text}])
    if finished is None:
        return full  # unknown: the whole rendered turn, as the template writes it
    end = _end_of_turn(tokenizer, full, _common_prefix(prompt_ids, full))
    if end is None:
        return full
    # a finished turn ends at its end-of-turn token (whatever the template adds after it is
    # never generated); a cut-off one is a prefix the model may go on from
    return full[: end + 1] if finished else full[:end]


def tokenize_pair(
    tokenizer: Any, pair: PreferencePair, max_length: int, max_prompt_length: int
) -> TokenizedPair | None:
    """Tokenize a pair the way the model will see it at inference.

    Chat prompts: the prompt is rendered with the generation prompt, each completion as the
    assistant turn that follows, and a completion is what the full conversation adds beyond the
    prompt. Raw prompts get EOS after each completion. How a completion ends follows its
    ``*_finished`` flag:

    - True: it ends at the end-of-turn token, with nothing after it;
    - False (cut off by the token budget): no end-of-turn token, so the model learns the text
      as a prefix, not as a reply that stops there;
    - None (unknown): the whole assistant turn as the template renders it.

    With ``*_token_ids`` the completion is exactly those ids, after the prompt rendered with the
    generation prompt (as it was sampled).

    The prompt keeps its last ``max_prompt_length`` tokens; each completion is cut so prompt +
    completion fits ``max_length``. Returns None when nothing of a completion is left.
    """
    if isinstance(pair.prompt, str):
        prompt_ids = _ids(tokenizer, pair.prompt)
    else:
        prompt_ids = _ids(tokenizer, pair.prompt, add_generation_prompt=True)
    full_chosen = _with_completion(
        tokenizer,
        pair.prompt,
        prompt_ids,
        pair.chosen,
        pair.chosen_finished,
        pair.chosen_token_ids,
    )
    full_rejected = _with_completion(
        tokenizer,
        pair.prompt,
        prompt_ids,
        pair.rejected,
        pair.rejected_finished,
        pair.rejected_token_ids,
    )
    # The completion starts where prompt and prompt + completion stop agreeing (token merges or
    # templates can change the prompt's last tokens).
    start = min(_common_prefix(prompt_ids, full_chosen), _common_prefix(prompt_ids, full_rejected))
    prompt = prompt_ids[:start]
    chosen_ids = full_chosen[start:]
    rejected_ids = full_rejected[start:]
    if len(prompt) > max_prompt_length:
        prompt = prompt[len(prompt) - max_prompt_length :]
    room = max_length - len(prompt)
    chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
    if not chosen_ids or not rejected_ids or not prompt:
        return None
    return TokenizedPair(prompt, chosen_ids, rejected_ids, pair.weight, pair.label_smoothing)


def tokenize_pairs(
    tokenizer: Any, pairs: Iterable[PreferencePair], max_length: int, max_prompt_length: int
) -> list[TokenizedPair]:
    """Tokenize many pairs, dropping those with no completion left after truncation."""
    out = []
    for pair in pairs:
        tokenized = tokenize_pair(tokenizer, pair, max_length, max_prompt_length)
        if tokenized is not None:
            out.append(tokenized)
    return out


def split_heldout(
    pairs: Sequence[PreferencePair], fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Split into (train, held-out) with a seeded shuffle; at least one held-out pair when the
    fraction is positive and there are two or more pairs."""
    if fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_heldout = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    held = sorted(order[:n_heldout])
    held_set = set(held)
    train = [p for i, p in enumerate(pairs) if i not in held_set]
    return train, [pairs[i] for i in held]


def make_batches(
    pairs: Sequence[TokenizedPair],
    batch_size: int,
    *,
    bucket: bool,
    shuffle: bool,
    seed: int,
) -> list[list[TokenizedPair]]:
    """Group pairs into batches.

    With ``bucket``, pairs are sorted by length inside windows of 50 batches, so a batch holds
    pairs of similar length (less padding); the order of the batches is then shuffled so that
    training does not see lengths in order. Without it, pairs are shuffled and cut in order.
    """
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    if shuffle:
        rng.shuffle(order)
    if bucket:
        window = batch_size * 50
        order = [
            i
            for start in range(0, len(order), window)
            for i in sorted(order[start : start + window], key=lambda j: pairs[j].num_tokens)
        ]
    batches = [
        [pairs[i] for i in order[start : start + batch_size]]
        for start in range(0, len(order), batch_size)
    ]
    if bucket and shuffle:
        rng.shuffle(batches)
    return batches
