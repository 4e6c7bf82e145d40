"""Throughput and peak memory of our DPO trainer against TRL's DPOTrainer.

Each trainer runs in its own fresh process on the same model, pairs, batch size, max length,
learning rate and number of steps, in float32, with reference log-probs precomputed (TRL:
``precompute_ref_log_probs=True``), no evaluation, no logging and no checkpoint saving.
Throughput comes from the median optimizer-step time (model loading and the reference pass are
excluded for both; the median resists other processes briefly sharing the CPU); tokens count
prompt + chosen and prompt + rejected of every trained pair. Peak memory is the peak RSS of each
process by the end of training.

    python bench/bench_train.py                 # tiny and demo model, full and LoRA
    python bench/bench_train.py --model demo --lora --pairs 16 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_TEXT = (
    "the model answers each question with care and gives a short clear reason before it "
    "states the result so that a reader can check every step of the argument without any "
    "extra context while a weaker reply wanders off topic repeats itself or guesses"
)
WORDS = _TEXT.split(" ")


def make_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic conversational pairs, about 170 tokens per prompt + completion."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    rows = []
    for _ in range(n):
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You are a concise, careful assistant."},
                    {"role": "user", "content": text(30, 70)},
                ],
                "chosen": [{"role": "assistant", "content": text(40, 110)}],
                "rejected": [{"role": "assistant", "content": text(40, 110)}],
            }
        )
    return rows


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------------
# workers (each runs in its own process)


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from training.core import DPOConfig, train_dpo
    from training.core.data import pair_from_row

    torch.set_num_threads(spec["threads"])
    pairs = [pair_from_row(r) for r in make_rows(spec["pairs"])]
    config = DPOConfig(
        lora=spec["lora"],
        learning_rate=spec["lr"],
        lora_learning_rate=spec["lr"],
        batch_size=spec["batch_size"],
        max_length=spec["max_length"],
        max_prompt_length=spec["max_length"],
        max_steps=spec["steps"],
        epochs=1,
        heldout_fraction=0.0,
        warmup_ratio=0.0,
        device="cpu",
        **spec.get("ours", {}),
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = train_dpo(pairs, spec["model_dir"], Path(tmp) / "v", config)
    return summarise(
        [h["seconds"] for h in result.history],
        result.pairs_trained,
        result.tokens_per_s * result.train_seconds,
        result.peak_memory_bytes,
    )


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from training.core.data import pair_from_row, tokenize_pairs

    torch.set_num_threads(spec["threads"])
    datasets.disable_progress_bars()
    rows = make_rows(spec["pairs"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    peft_config = None
    if spec["lora"]:
        from peft import LoraConfig

        from training.core import DPOConfig

        defaults = DPOConfig()
        peft_config = LoraConfig(
            r=defaults.lora_r,
            lora_alpha=defaults.lora_alpha,
            lora_dropout=defaults.lora_dropout,
            target_modules=list(defaults.lora_target_modules),
            task_type="CAUSAL_LM",
        )

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.begin = 0.0
            self.durations: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.begin = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.durations.append(time.perf_counter() - self.begin)

    timer = Timer()
    with tempfile.TemporaryDirectory() as tmp:
        args = trl.DPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=spec["batch_size"],
            precompute_ref_log_probs=True,
            max_length=spec["max_length"],
            learning_rate=spec["lr"],
            max_steps=spec["steps"],
            lr_scheduler_type="linear",
            warmup_steps=0,
            max_grad_norm=1.0,
            beta=0.1,
            loss_type=["sigmoid"],
            bf16=False,
            gradient_checkpointing=False,
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = trl.DPOTrainer(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[timer],
        )
        trainer.train()
        peak = peak_rss()
    tokenized = tokenize_pairs(
        tokenizer, [pair_from_row(r) for r in rows], spec["max_length"], spec["max_length"]
    )
    trained = min(len(tokenized), len(timer.durations) * spec["batch_size"])
    tokens = sum(p.pair_tokens for p in tokenized) * trained / len(tokenized)
    return summarise(timer.durations, trained, tokens, peak)


def summarise(durations: list[float], pairs: int, tokens: float, peak: int) -> dict[str, Any]:
    """Rates from the median step time: robust to other work briefly sharing the CPU."""
    median = statistics.median(durations)
    steps = len(durations)
    return {
        "steps": steps,
        "step_seconds": durations,
        "pairs_per_s": pairs / steps / median,
        "tokens_per_s": tokens / steps / median,
        "mean_pairs_per_s": pairs / sum(durations),
        "peak_rss": peak,
    }


# ---------------------------------------------------------------------------------------------
# driver


def tiny_model_dir(cache: Path) -> Path:
    """A random-weight 4-layer Llama with the demo model's tokenizer (saved once)."""
    target = cache / "bench-tiny-llama"
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from training.core import resolve_demo_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_demo_model())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    tmp = Path(tempfile.mkdtemp(dir=cache))
    LlamaForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)
    return target


def run_worker(which: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", which, "--spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{which} worker failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("tiny", "demo"), action="append")
    parser.add_argument("--lora", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--pairs", type=int, default=None, help="pairs (default batch x steps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=None, help="default: tiny 8, demo 4")
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        run = run_ours if args.worker == "ours" else run_trl
        print(json.dumps(run(json.loads(args.spec))))
        return

    from training.core import resolve_demo_model
    from training.core.loading import model_cache_dir

    cache = model_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    models = args.model or ["tiny", "demo"]
    modes = [args.lora] if args.lora is not None else [False, True]
    rows = []
    print(
        f"batch size {args.batch_size}, max length {args.max_length}, float32, "
        f"{args.threads} threads, reference log-probs precomputed",
        file=sys.stderr,
    )
    for name in models:
        model_dir = resolve_demo_model() if name == "demo" else tiny_model_dir(cache)
        steps = args.steps or (4 if name == "demo" else 8)
        for lora in modes:
            spec = {
                "model_dir": str(model_dir),
                "lora": lora,
                "pairs": args.pairs or steps * args.batch_size,
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "steps": steps,
                "lr": args.lr,
                "threads": args.threads,
            }
            label = f"{name} {'LoRA' if lora else 'full'}"
            print(f"running {label}: TRL ...", file=sys.stderr, flush=True)
            theirs = run_worker("trl", spec)
            print(f"running {label}: ours ...", file=sys.stderr, flush=True)
            ours = run_worker("ours", spec)
            rows.append((label, steps, ours, theirs))
    header = (
        f"{'run':<11} {'steps':>5} | {'ours pairs/s':>12} {'TRL pairs/s':>11} {'ratio':>6} | "
        f"{'ours tok/s':>10} {'TRL tok/s':>9} | {'ours RSS':>9} {'TRL RSS':>9} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for label, steps, ours, theirs in rows:
        speed = ours["pairs_per_s"] / theirs["pairs_per_s"]
        memory = ours["peak_rss"] / theirs["peak_rss"]
        print(
            f"{label:<11} {steps:>5} | {ours['pairs_per_s']:>12.3f} {theirs['pairs_per_s']:>11.3f} "
            f"{speed:>5.2f}x | {ours['tokens_per_s']:>10.1f} {theirs['tokens_per_s']:>9.1f} | "
            f"{ours['peak_rss'] / 2**20:>7.0f}MB {theirs['peak_rss'] / 2**20:>7.0f}MB "
            f"{memory:>5.2f}x"
        )


if __name__ == "__main__":
    main()
