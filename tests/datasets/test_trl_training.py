"""The exported TRL JSONL and Parquet load with ``datasets`` and train TRL's DPOTrainer a step."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("trl")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from annotate.datasets.exporters import write_export  # noqa: E402
from annotate.datasets.labels import PairOptions  # noqa: E402
from training.core.tiny import tiny_llama, word_tokenizer  # noqa: E402

from .conftest import import_path, write_jsonl  # noqa: E402

ROWS = [
    {
        "prompt": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": f"what is {i} plus {i}"},
        ],
        "chosen": [{"role": "assistant", "content": f"it is {2 * i} indeed"}],
        "rejected": [{"role": "assistant", "content": "no idea sorry"}],
    }
    for i in range(4)
]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = {
        w
        for row in ROWS
        for part in ("prompt", "chosen", "rejected")
        for m in row[part]
        for w in m["content"].split()
    }
    return word_tokenizer(sorted(words))


def one_step(train: datasets.Dataset, tmp, tokenizer: PreTrainedTokenizerFast) -> None:
    model = tiny_llama(
        tokenizer,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = DPOConfig(
        output_dir=str(tmp / "dpo"),
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        bf16=False,
    )
    reference = copy.deepcopy(model)
    trainer = DPOTrainer(
        model=model, ref_model=reference, args=args, train_dataset=train, processing_class=tokenizer
    )
    trainer.train()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no parameter changed after one DPO step"


@pytest.mark.slow
def test_it_trains_trl_dpo_on_exported_jsonl_and_parquet(team, tmp):
    import_path(team.project, "trl", write_jsonl(tmp / "in.jsonl", ROWS))
    write_export(team.project, "trl", PairOptions(), tmp / "pairs.jsonl")
    write_export(team.project, "parquet", PairOptions(), tmp / "pairs.parquet")
    tokenizer = tiny_tokenizer()
    for loaded in (
        datasets.load_dataset("json", data_files=str(tmp / "pairs.jsonl"), split="train"),
        datasets.load_dataset("parquet", data_files=str(tmp / "pairs.parquet"), split="train"),
    ):
        assert loaded.num_rows == 4
        assert loaded[0]["prompt"] == ROWS[0]["prompt"]
        one_step(loaded.select_columns(["prompt", "chosen", "rejected"]), tmp, tokenizer)
