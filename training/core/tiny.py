"""Tiny random-weight Llama models, built offline, for tests and benchmarks.

A model of a few thousand to a few million parameters runs the real code paths (tokenizing,
sampling, DPO steps, saving versions) in seconds on a CPU, with nothing to download.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Each message as "<|role|> text <|end|>", so a word-level tokenizer covers the whole chat.
WORD_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
_PAD, _UNKNOWN, _END = "<pad>", "<unk>", "<|end|>"
_ROLES = ["<|user|>", "<|assistant|>", "<|system|>"]
_SPECIALS = [_PAD, _UNKNOWN, _END, *_ROLES]


def word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` (one token each) with a chat template.

    Text splits on whitespace and punctuation; a word outside ``words`` becomes ``<unk>``.
    """
    vocab = {token: i for i, token in enumerate([*_SPECIALS, *dict.fromkeys(words)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_UNKNOWN))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=_UNKNOWN,
        pad_token=_PAD,
        eos_token=_END,
        additional_special_tokens=_ROLES,
    )
    tokenizer.chat_template = WORD_CHAT_TEMPLATE
    return tokenizer


def tiny_llama(
    tokenizer: Any,
    *,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A random-weight Llama whose vocabulary and special tokens are ``tokenizer``'s.

    The defaults give about 20k parameters plus the embeddings; ``seed`` fixes the weights.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(model: Any, tokenizer: Any, directory: Path) -> Path:
    """Write ``model`` and ``tokenizer`` where ``load_model`` finds them; returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
