"""Tiny offline models and tokenizers for the ML core tests (no Django, no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Write a short poem about the sea. The sea is wide and blue.",
    "I am sorry, I cannot help with that. Here is a helpful answer.",
    "What is two plus two? Two plus two is four. It is five.",
    "user assistant system You are a helpful assistant.",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()-",
]


def build_tokenizer() -> Any:
    """A byte-level BPE tokenizer (about 400 tokens) with a ChatML template, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: Any, seed: int = 0, **overrides: Any) -> Any:
    """A two-layer random-weight Llama matching ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    settings: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": True,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    settings.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    """A saved tiny model directory, loadable with `load_model`."""
    path = tmp_path_factory.mktemp("tiny-llama")
    build_model(tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


PROMPTS = [
    "What is two plus two?",
    "Name the capital of France.",
    "Write a short poem about the sea.",
    "Say something helpful.",
    "Which animal jumps over the lazy dog?",
    "What is the capital of Germany?",
    "Count to five.",
    "Describe the sea in one sentence.",
]


def make_pair_rows() -> list[dict[str, Any]]:
    """Eight TRL-conversational rows whose chosen and rejected answers differ in a fixed way."""
    rows = []
    for i, prompt in enumerate(PROMPTS):
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [
                    {"role": "assistant", "content": "Here is a helpful answer." * (1 + i % 2)}
                ],
                "rejected": [
                    {"role": "assistant", "content": "I am sorry, I cannot help" + "!" * i}
                ],
            }
        )
    return rows


@pytest.fixture()
def pairs() -> list[Any]:
    from training.core.data import pair_from_row

    return [pair_from_row(row) for row in make_pair_rows()]
