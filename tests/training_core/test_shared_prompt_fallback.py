"""Shared-prompt rows only where the model honours their 4D mask; separate rows elsewhere."""

from types import SimpleNamespace

import pytest
import torch
from transformers import (
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
)

from training.core import DPOConfig, train_dpo
from training.core.data import tokenize_pairs
from training.core.logprobs import (
    build_batch,
    completion_logps,
    share_prompt_for,
    shared_prompt_blocker,
)
from training.core.tiny import save_tiny

from .conftest import build_model

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _as_model(config):
    return SimpleNamespace(config=config)


@pytest.mark.parametrize("attn", ["flash_attention_2", "flash_attention_3", "flex_attention"])
def test_attention_that_ignores_a_custom_mask_gets_separate_rows(attn):
    config = LlamaConfig(vocab_size=64, num_key_value_heads=2, attn_implementation=attn, **SIZES)
    assert "ignores a custom 4D mask" in shared_prompt_blocker(_as_model(config), 10)
    for honoured in ("sdpa", "eager"):
        config = LlamaConfig(vocab_size=64, attn_implementation=honoured, **SIZES)
        assert shared_prompt_blocker(_as_model(config), 10_000) is None


@pytest.mark.parametrize(
    "config, blocked",
    [
        (MistralConfig(vocab_size=64, sliding_window=16, **SIZES), True),
        (MistralConfig(vocab_size=64, sliding_window=None, **SIZES), False),
        (Qwen2Config(vocab_size=64, sliding_window=16, use_sliding_window=False, **SIZES), False),
        (
            Qwen2Config(
                vocab_size=64,
                sliding_window=16,
                use_sliding_window=True,
                max_window_layers=1,
                **SIZES,
            ),
            True,
        ),
        (Gemma2Config(vocab_size=64, sliding_window=16, head_dim=8, **SIZES), True),
    ],
    ids=["mistral", "mistral-no-window", "qwen2-window-off", "qwen2-window-on", "gemma2"],
)
def test_a_sliding_window_blocks_sharing_only_past_the_window(config, blocked):
    config._attn_implementation = "sdpa"
    model = _as_model(config)
    assert shared_prompt_blocker(model, 16) is None  # every sequence fits in the window
    reason = shared_prompt_blocker(model, 17)
    assert (reason is not None) == blocked
    if blocked:
        assert reason == "sequences of 17 tokens exceed the model's sliding window of 16"


def test_scoring_a_shared_batch_on_flash_attention_is_refused(tiny_tokenizer, pairs):
    model = build_model(tiny_tokenizer)
    model.config._attn_implementation = "flash_attention_2"  # decided before any forward
    tokenized = tokenize_pairs(tiny_tokenizer, pairs, 512, 256)
    assert not share_prompt_for(model, tokenized, requested=True)
    with pytest.raises(ValueError, match="flash_attention_2"):
        completion_logps(model, build_batch(tokenized, 0, share_prompt=True))


def _tiny_mistral(tokenizer, window):
    config = MistralConfig(
        vocab_size=len(tokenizer),
        num_key_value_heads=2,
        max_position_embeddings=512,
        sliding_window=window,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        attn_implementation="sdpa",
        **SIZES,
    )
    torch.manual_seed(0)
    return MistralForCausalLM(config)


def test_where_both_layouts_are_valid_they_give_the_same_logprobs(tiny_tokenizer, pairs):
    tokenized = tokenize_pairs(tiny_tokenizer, pairs, 512, 256)
    model = _tiny_mistral(tiny_tokenizer, window=4096)
    assert share_prompt_for(model, tokenized, requested=True)
    shared = completion_logps(model, build_batch(tokenized, 0, share_prompt=True))
    separate = completion_logps(model, build_batch(tokenized, 0, share_prompt=False))
    assert torch.allclose(shared, separate, atol=1e-5)


def test_a_sliding_window_model_trains_on_separate_rows(tiny_tokenizer, pairs, tmp_path):
    tokenized = tokenize_pairs(tiny_tokenizer, pairs, 512, 256)
    longest = max(
        len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in tokenized
    )
    window = longest // 2  # the longest pairs do not fit in it
    model = _tiny_mistral(tiny_tokenizer, window)
    assert not share_prompt_for(model, tokenized, requested=True)
    with pytest.raises(ValueError, match="sliding window"):
        completion_logps(model, build_batch(tokenized, 0, share_prompt=True))
    model_dir = save_tiny(model, tiny_tokenizer, tmp_path / "mistral")
    losses = {}
    for share in (True, False):
        config = DPOConfig(
            share_prompt=share,
            learning_rate=1e-2,
            epochs=2,
            heldout_fraction=0.0,
            warmup_ratio=0.0,
            lora=False,
        )
        result = train_dpo(pairs, model_dir, tmp_path / f"v-{share}", config)
        losses[share] = [h["loss"] for h in result.history]
    assert losses[True] == losses[False]
    assert losses[True][-1] < losses[True][0]
