import torch

from training.core import Sample, generate, load_model, make_pairs
from training.core.generation import _filter_top_p, generate_seeded

PROMPTS = [
    [{"role": "user", "content": "What is two plus two?"}],
    [{"role": "user", "content": "Write a short poem about the sea, please, with rhymes."}],
    [{"role": "user", "content": "Hi"}],
]


def test_it_samples_k_completions_per_prompt(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    results = generate(loaded, PROMPTS, k=3, max_new_tokens=8, seed=1, batch_size=4)
    assert [len(r) for r in results] == [3, 3, 3]
    for row in results:
        for sample in row:
            assert 1 <= sample.token_count <= 8
            assert sample.logprob < 0


def test_logprob_is_the_policys_probability_of_the_tokens(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    (row,) = generate((model, tokenizer), PROMPTS[:1], k=2, max_new_tokens=6, temperature=1.5)
    prompt = tokenizer.apply_chat_template(
        PROMPTS[0], tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    for sample in row:
        # re-score the sampled tokens with one plain forward pass, untempered
        ids = torch.tensor([prompt + sample.token_ids])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        expected = logps[len(prompt) - 1 :].gather(1, ids[0, len(prompt) :, None]).sum()
        assert abs(expected.item() - sample.logprob) < 1e-3


def test_batched_and_sequential_greedy_agree(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    batched = generate(loaded, PROMPTS, k=1, temperature=0, max_new_tokens=10, batch_size=8)
    single = generate(loaded, PROMPTS, k=1, temperature=0, max_new_tokens=10, batch_size=1)
    for a, b in zip(batched, single, strict=True):
        assert a[0].text == b[0].text
        assert abs(a[0].logprob - b[0].logprob) < 1e-3


def test_same_seed_same_samples(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    a = generate(loaded, PROMPTS, k=2, max_new_tokens=6, seed=7)
    b = generate(loaded, PROMPTS, k=2, max_new_tokens=6, seed=7)
    assert a == b


def seeded(*args, **kw):
    """generate_seeded's batches gathered into one list per prompt, in prompt order."""
    rows = {}
    for batch in generate_seeded(*args, **kw):
        assert not rows.keys() & batch.keys()
        rows.update(batch)
    return [rows[i] for i in range(len(rows))]


def test_seeded_prompts_sample_as_they_would_alone(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    seeds = [11, 12, 13]
    batched = seeded(
        loaded, PROMPTS, seeds, k=2, temperature=1.0, top_p=0.95, max_new_tokens=8, batch_size=6
    )
    alone = [
        generate(
            loaded, [p], k=2, temperature=1.0, top_p=0.95, max_new_tokens=8, seed=s, batch_size=2
        )[0]
        for p, s in zip(PROMPTS, seeds, strict=True)
    ]
    for mine, theirs in zip(batched, alone, strict=True):
        assert [s.token_ids for s in mine] == [s.token_ids for s in theirs]
        assert [s.finished for s in mine] == [s.finished for s in theirs]
    # a prompt's samples follow its own seed, not its neighbours'
    swapped = seeded(
        loaded, PROMPTS[::-1], seeds[::-1], k=2, temperature=1.0, top_p=0.95, max_new_tokens=8
    )
    assert [[s.token_ids for s in row] for row in swapped[::-1]] == [
        [s.token_ids for s in row] for row in batched
    ]
    other = seeded(
        loaded, PROMPTS, [21, 12, 13], k=2, temperature=1.0, top_p=0.95, max_new_tokens=8
    )
    assert [s.token_ids for s in other[0]] != [s.token_ids for s in batched[0]]
    assert [s.token_ids for s in other[1]] == [s.token_ids for s in batched[1]]


def test_it_stops_at_eos(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    (first,) = generate((model, tokenizer), PROMPTS[:1], k=1, temperature=0, max_new_tokens=1)
    # declare the greedy first token an end-of-sequence token: generation must stop right there
    model.generation_config.eos_token_id = [first[0].token_ids[0], tokenizer.eos_token_id]
    (row,) = generate((model, tokenizer), PROMPTS[:1], k=1, temperature=0, max_new_tokens=10)
    assert row[0].token_count == 1 and row[0].finished
    model.generation_config.eos_token_id = tokenizer.eos_token_id


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(_filter_top_p(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]


def test_pairing_skips_identical_texts():
    samples = [Sample("a", 1, -1.0), Sample("a ", 1, -1.0), Sample("b", 1, -1.0)]
    assert make_pairs(samples) == [(0, 2)]
    assert make_pairs(samples, max_pairs=None) == [(0, 2), (1, 2)]
    assert make_pairs([Sample("x", 1, 0.0), Sample("x", 1, 0.0)]) == []
    four = [Sample(t, 1, 0.0) for t in "abcd"]
    assert make_pairs(four, max_pairs=2) == [(0, 1), (2, 3)]
