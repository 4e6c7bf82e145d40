"""Tiny offline models and tokenizers for the ML core tests (no Django, no downloads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.core.tiny import save_tiny, tiny_llama

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


def build_model(tokenizer: Any, seed: int = 0) -> Any:
    """The core tests' tiny Llama over ``tokenizer`` (their texts stay under 512 tokens)."""
    return tiny_llama(tokenizer, max_position_embeddings=512, seed=seed)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Any) -> Path:
    """A saved tiny model directory, loadable with `load_model`."""
    return save_tiny(
        build_model(tiny_tokenizer), tiny_tokenizer, tmp_path_factory.mktemp("tiny-llama")
    )


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


def dpo_config(**overrides: Any) -> Any:
    """A DPO config that moves a tiny model within a few steps: all weights, a large step and
    beta, no warm-up and no held-out split; ``overrides`` change any field."""
    from training.core import DPOConfig

    settings: dict[str, Any] = dict(
        learning_rate=1e-2,
        epochs=2,
        batch_size=4,
        heldout_fraction=0.0,
        warmup_ratio=0.0,
        beta=0.5,
        lora=False,
        seed=0,
    )
    settings.update(overrides)
    return DPOConfig(**settings)
