import json

import pytest

from training.core.data import DataError, make_batches, read_pairs, split_heldout, tokenize_pair


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_it_reads_trl_conversational_rows(tmp_path):
    path = _write(
        tmp_path / "p.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "Hello!"}],
                "rejected": [{"role": "assistant", "content": "Go away."}],
                "weight": 0.5,
            }
        ],
    )
    (pair,) = read_pairs(path)
    assert pair.prompt == [{"role": "user", "content": "Hi"}]
    assert (pair.chosen, pair.rejected, pair.weight) == ("Hello!", "Go away.", 0.5)


def test_it_reads_trl_plain_string_rows(tmp_path):
    path = _write(tmp_path / "p.jsonl", [{"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"}])
    (pair,) = read_pairs(path)
    assert pair.prompt == "Q: 2+2?"
    assert pair.weight == 1.0


def test_a_missing_field_names_the_line(tmp_path):
    good = {"prompt": "a", "chosen": "b", "rejected": "c"}
    path = _write(tmp_path / "p.jsonl", [good, {"prompt": "a", "chosen": "b"}])
    with pytest.raises(DataError, match=r"line 2: missing field 'rejected'"):
        read_pairs(path)


def test_bad_json_names_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{oops\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        read_pairs(path)


def test_completions_end_with_the_end_of_turn(tiny_tokenizer, pairs):
    tokenized = tokenize_pair(tiny_tokenizer, pairs[0], 512, 256)
    assert tokenized is not None
    assert tiny_tokenizer.eos_token_id in tokenized.chosen_ids
    assert tiny_tokenizer.decode(tokenized.prompt_ids).endswith("assistant\n")


def test_truncation_keeps_the_end_of_the_prompt(tiny_tokenizer, pairs):
    full = tokenize_pair(tiny_tokenizer, pairs[0], 512, 256)
    cut = tokenize_pair(tiny_tokenizer, pairs[0], 12, 8)
    assert full is not None and cut is not None
    assert cut.prompt_ids == full.prompt_ids[-8:]
    assert len(cut.prompt_ids) + len(cut.chosen_ids) <= 12


def test_heldout_split_is_seeded_and_disjoint(pairs):
    train, held = split_heldout(pairs, 0.25, seed=3)
    again, held_again = split_heldout(pairs, 0.25, seed=3)
    assert held == held_again and len(held) == 2 and len(train) == 6
    assert not any(p in train for p in held)


def test_bucketing_groups_similar_lengths(tiny_tokenizer, pairs):
    tokenized = [tokenize_pair(tiny_tokenizer, p, 512, 256) for p in pairs]
    batches = make_batches(tokenized, 2, bucket=True, shuffle=True, seed=0)
    assert sorted(len(b) for b in batches) == [2, 2, 2, 2]
    spreads = [abs(b[0].num_tokens - b[1].num_tokens) for b in batches]
    lengths = sorted(p.num_tokens for p in tokenized)
    assert max(spreads) <= lengths[-1] - lengths[0]
    assert sum(spreads) <= sum(lengths[i + 1] - lengths[i] for i in range(0, 8, 2))
