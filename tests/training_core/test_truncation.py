"""How a completion ends in training: cut off, finished, unknown, or as sampled (token ids)."""

import json

import pytest

from training.core import generate, load_model
from training.core.data import DataError, PreferencePair, read_pairs, tokenize_pair

PROMPT = [{"role": "user", "content": "What is two plus two?"}]
CHOSEN = "Two plus two is four."
REJECTED = "It is five."


def _tokenize(tokenizer, **fields):
    pair = PreferencePair(prompt=PROMPT, chosen=CHOSEN, rejected=REJECTED, **fields)
    tokenized = tokenize_pair(tokenizer, pair, 512, 256)
    assert tokenized is not None
    return tokenized


def _newline(tokenizer):
    (newline,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    return newline


def test_unknown_keeps_the_whole_rendered_turn(tiny_tokenizer):
    # what the template writes after the end-of-turn token (a newline) stays, as before
    tokenized = _tokenize(tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id
    assert tokenized.chosen_ids[-2:] == [eos, _newline(tiny_tokenizer)]


def test_a_finished_completion_ends_exactly_at_its_end_of_turn(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    unknown = _tokenize(tiny_tokenizer)
    tokenized = _tokenize(tiny_tokenizer, chosen_finished=True, rejected_finished=True)
    for ids, before in ((tokenized.chosen_ids, unknown.chosen_ids),
                        (tokenized.rejected_ids, unknown.rejected_ids)):  # fmt: skip
        assert ids[-1] == eos and ids.count(eos) == 1
        assert ids == before[: before.index(eos) + 1]


def test_a_cut_off_completion_has_no_end_of_turn_and_nothing_after(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    unknown = _tokenize(tiny_tokenizer)
    tokenized = _tokenize(tiny_tokenizer, chosen_finished=False, rejected_finished=True)
    assert eos not in tokenized.chosen_ids
    assert tokenized.chosen_ids == unknown.chosen_ids[: unknown.chosen_ids.index(eos)]
    assert tiny_tokenizer.decode(tokenized.chosen_ids) == CHOSEN
    # the other side is unaffected by its partner being cut off
    assert tokenized.rejected_ids[-1] == eos


def test_sampled_token_ids_are_trained_verbatim(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    # one token per character: the same text as CHOSEN, but not the ids re-encoding would give
    by_char = [tiny_tokenizer.convert_tokens_to_ids(c) for c in "Two"]
    assert by_char != tiny_tokenizer("Two", add_special_tokens=False)["input_ids"]
    rejected_ids = tiny_tokenizer("It is", add_special_tokens=False)["input_ids"] + [eos]
    tokenized = _tokenize(
        tiny_tokenizer,
        chosen_finished=False,
        rejected_finished=True,
        chosen_token_ids=by_char,
        rejected_token_ids=rejected_ids,
    )
    prompt = tiny_tokenizer.apply_chat_template(
        PROMPT, tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    assert tokenized.prompt_ids == prompt
    assert tokenized.chosen_ids == by_char
    assert tokenized.rejected_ids == rejected_ids


def test_token_ids_outside_the_vocabulary_are_refused(tiny_tokenizer):
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        _tokenize(tiny_tokenizer, chosen_token_ids=[len(tiny_tokenizer) + 5])


def test_a_cut_off_plain_completion_gets_no_eos(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    pair = PreferencePair(prompt="Q: 2+2?", chosen=" four", rejected=" five", chosen_finished=False)
    tokenized = tokenize_pair(tiny_tokenizer, pair, 512, 256)
    assert tokenized is not None
    assert eos not in tokenized.chosen_ids
    assert tokenized.rejected_ids[-1] == eos


def test_samples_of_the_model_train_as_they_were_sampled(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    (row,) = generate((model, tokenizer), [PROMPT], k=2, max_new_tokens=5, seed=3)
    # a random tiny model hardly ever ends within 5 tokens: both are cut off
    assert not any(s.finished for s in row)
    pair = PreferencePair(
        prompt=PROMPT,
        chosen=row[0].text,
        rejected=row[1].text,
        chosen_finished=row[0].finished,
        rejected_finished=row[1].finished,
        chosen_token_ids=row[0].token_ids,
        rejected_token_ids=row[1].token_ids,
    )
    tokenized = tokenize_pair(tokenizer, pair, 512, 256)
    assert tokenized is not None
    assert tokenized.chosen_ids == row[0].token_ids
    assert tokenized.rejected_ids == row[1].token_ids
    assert tokenizer.eos_token_id not in tokenized.chosen_ids + tokenized.rejected_ids


def test_it_reads_finished_and_token_ids_from_jsonl(tmp_path):
    rows = [
        {"prompt": PROMPT, "chosen": "a", "rejected": "b", "chosen_finished": False,
         "rejected_finished": True, "chosen_token_ids": [5, 6], "rejected_token_ids": None},
        {"prompt": PROMPT, "chosen": "a", "rejected": "b"},
    ]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    first, second = read_pairs(path)
    assert (first.chosen_finished, first.rejected_finished) == (False, True)
    assert (first.chosen_token_ids, first.rejected_token_ids) == ([5, 6], None)
    assert second.chosen_finished is None and second.chosen_token_ids is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("chosen_finished", "yes", "'chosen_finished' must be true, false or null"),
        ("rejected_token_ids", [1, -2], "'rejected_token_ids' must be a list of non-negative"),
        ("chosen_token_ids", "1 2", "'chosen_token_ids' must be a list of non-negative"),
    ],
)
def test_bad_finished_or_token_ids_name_the_line_and_field(tmp_path, field, value, message):
    path = tmp_path / "pairs.jsonl"
    good = {"prompt": "a", "chosen": "b", "rejected": "c"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, field: value}) + "\n")
    with pytest.raises(DataError, match=f"line 2: {message}"):
        read_pairs(path)
