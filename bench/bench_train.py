"""Throughput and peak memory of our DPO trainer against TRL's DPOTrainer.

Each trainer runs in its own fresh process on the same model, pairs, batch size, max length,
learning rate and number of steps, in float32, with reference log-probs precomputed (TRL:
``precompute_ref_log_probs=True``), no evaluation, no logging and no checkpoint saving.
Throughput comes from the median optimizer-step time (model loading and the reference pass are
excluded for both; the median resists other processes briefly sharing the CPU); tokens count
prompt + chosen and prompt + rejected of every trained pair. Peak memory is the peak RSS of each
process by the end of training.

With ``--ablation`` it instead measures each of our efficiency techniques: our trainer runs once
with everything on, then once per variant with one technique changed (prompt sharing, chunked
completion log-probs and length bucketing off; gradient checkpointing on; two micro-batches of
half the batch per step), each in its own process, on pairs of mixed short and long completions.
Every variant trains the same pairs for several epochs and its rates come from the median epoch
(an epoch holds every pair once, so it is a fair unit of work even when bucketing makes batches
uneven). The padding fraction counts pad slots among all token slots the model is fed; "train
RSS" is the peak RSS from the end of the first optimizer step to the end of the run (model
loading and the reference pass excluded).

    python bench/bench_train.py                 # tiny and demo model, full and LoRA
    python bench/bench_train.py --model demo --lora --pairs 16 --steps 4
    python bench/bench_train.py --ablation      # tiny model full, demo model LoRA

On a GPU, ``--device cuda`` runs the matrix of ``bench_train_device.py`` instead (the demo
architecture with random weights in bf16 and fp32 against TRL with and without gradient
checkpointing; ``--llama-1b`` adds a 1.1B Llama); it imports only ``training/core``:

    python3 bench/bench_train.py --device cuda [--llama-1b]
    python3 bench/bench_train.py --device cpu --smoke   # the same matrix on 2-layer models
"""

from __future__ import annotations

import argparse
import contextlib
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

import bench_train_device  # noqa: E402 - beside this script, found through sys.path[0]

_TEXT = (
    "the model answers each question with care and gives a short clear reason before it "
    "states the result so that a reader can check every step of the argument without any "
    "extra context while a weaker reply wanders off topic repeats itself or guesses"
)
WORDS = _TEXT.split(" ")


# completion lengths in words for --ablation: short, medium and long pairs, mixed
VARIED_LENGTHS = ((4, 16), (40, 80), (130, 200))


def make_rows(n: int, seed: int = 0, varied: bool = False) -> list[dict[str, Any]]:
    """Deterministic conversational pairs, about 170 tokens per prompt + completion.

    ``varied``: each pair is short, medium or long at random (both completions in the same word
    range; prompts 10-60 words), so that batches of unsorted pairs carry a lot of padding.
    """
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    rows = []
    for _ in range(n):
        prompt_words = (10, 60) if varied else (30, 70)
        completion_words = rng.choice(VARIED_LENGTHS) if varied else (40, 110)
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": "You are a concise, careful assistant."},
                    {"role": "user", "content": text(*prompt_words)},
                ],
                "chosen": [{"role": "assistant", "content": text(*completion_words)}],
                "rejected": [{"role": "assistant", "content": text(*completion_words)}],
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
        from training.core.config import DPOConfig
        from training.core.trainer import lora_config

        peft_config = lora_config(DPOConfig())

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


def _vm_hwm() -> int | None:
    """Peak RSS since the last `_reset_hwm` (Linux), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def run_ablation(spec: dict[str, Any]) -> dict[str, Any]:
    """One ablation variant of our trainer: rates of the median epoch, padding, peaks."""
    import torch
    from transformers import AutoTokenizer

    from training.core import DPOConfig, train_dpo
    from training.core.data import make_batches, pair_from_row, tokenize_pairs
    from training.core.logprobs import build_batch
    from training.core.trainer import _pad_id

    torch.set_num_threads(spec["threads"])
    pairs = [pair_from_row(r) for r in make_rows(spec["pairs"], varied=True)]
    epochs = spec["epochs"]
    config = DPOConfig(
        lora=spec["lora"],
        learning_rate=spec["lr"],
        lora_learning_rate=spec["lr"],
        batch_size=spec["batch_size"],
        max_length=spec["max_length"],
        max_prompt_length=spec["max_length"],
        epochs=epochs,
        heldout_fraction=0.0,
        warmup_ratio=0.0,
        device="cpu",
        **spec["ours"],
    )
    # The batches the trainer will build (same tokenization, seeds and bucketing), for padding.
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenized = tokenize_pairs(tokenizer, pairs, config.max_length, config.max_prompt_length)
    real = slots = 0
    for epoch in range(epochs):
        for group in make_batches(
            tokenized,
            config.batch_size,
            bucket=config.length_bucketing,
            shuffle=True,
            seed=config.seed + epoch,
        ):
            batch = build_batch(group, _pad_id(tokenizer), config.share_prompt)
            real += batch.num_tokens
            slots += batch.input_ids.numel()

    before_reset: list[int] = []

    def progress(step: int, total: int, loss: float, eta: float | None) -> None:
        if step == 1:
            before_reset.append(peak_rss())  # the reset below also resets ru_maxrss
            _reset_hwm()

    with tempfile.TemporaryDirectory() as tmp:
        result = train_dpo(pairs, spec["model_dir"], Path(tmp) / "v", config, progress=progress)
        train_peak = _vm_hwm()
    per_epoch = [0.0] * epochs
    for h in result.history:
        per_epoch[int(h["epoch"])] += h["seconds"]
    median = statistics.median(per_epoch)
    epoch_tokens = sum(p.pair_tokens for p in tokenized)
    return {
        "epochs": epochs,
        "steps": result.steps,
        "epoch_seconds": per_epoch,
        "pairs_per_s": len(tokenized) / median,
        "tokens_per_s": epoch_tokens / median,
        "peak_rss": max([result.peak_memory_bytes, *before_reset]),
        "train_rss": train_peak,
        "padding": 1 - real / slots if slots else 0.0,
    }


ABLATIONS: list[tuple[str, dict[str, Any]]] = [
    ("all on", {}),
    ("share_prompt off", {"share_prompt": False}),
    ("chunked_logprobs off", {"chunked_logprobs": False}),
    ("length_bucketing off", {"length_bucketing": False}),
    ("+ grad checkpointing", {"gradient_checkpointing": True}),
    ("grad accum 2, half batch", {"grad_accum_steps": 2}),
]


def ablation(args: argparse.Namespace, cache: Path) -> None:
    from training.core import resolve_demo_model

    models = args.model or ["tiny", "demo"]
    print(
        f"ablation: batch size {args.batch_size}, max length {args.max_length}, float32, "
        f"{args.threads} threads, mixed short/medium/long pairs, median of {args.epochs} epochs",
        file=sys.stderr,
    )
    tables = []
    for name in models:
        model_dir = resolve_demo_model() if name == "demo" else tiny_model_dir(cache)
        lora = args.lora if args.lora is not None else name == "demo"
        steps = args.steps or (2 if name == "demo" else 4)
        label = f"{name} {'LoRA' if lora else 'full'}"
        results = []
        for variant, overrides in ABLATIONS:
            batch_size = args.batch_size
            if overrides.get("grad_accum_steps"):
                batch_size = max(1, args.batch_size // overrides["grad_accum_steps"])
            spec = {
                "model_dir": str(model_dir),
                "lora": lora,
                "pairs": args.pairs or steps * args.batch_size,
                "batch_size": batch_size,
                "max_length": args.max_length,
                "epochs": args.epochs,
                "lr": args.lr,
                "threads": args.threads,
                "ours": overrides,
            }
            print(f"running {label}: {variant} ...", file=sys.stderr, flush=True)
            results.append((variant, run_worker("ablation", spec)))
        tables.append((label, spec["pairs"], results))
    for label, n_pairs, results in tables:
        header = (
            f"{label + f' ({n_pairs} pairs)':<26} | {'pairs/s':>7} {'tok/s':>7} {'speed':>6} | "
            f"{'peak RSS':>9} {'train RSS':>9} {'memory':>6} | {'padding':>7}"
        )
        print(header)
        print("-" * len(header))
        base = results[0][1]
        for variant, r in results:
            train = f"{r['train_rss'] / 2**20:>7.0f}MB" if r["train_rss"] else f"{'-':>9}"
            print(
                f"{variant:<26} | {r['pairs_per_s']:>7.3f} {r['tokens_per_s']:>7.1f} "
                f"{r['pairs_per_s'] / base['pairs_per_s']:>5.2f}x | "
                f"{r['peak_rss'] / 2**20:>7.0f}MB {train} "
                f"{r['peak_rss'] / base['peak_rss']:>5.2f}x | {r['padding']:>6.1%}"
            )
        print()


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
    from transformers import AutoTokenizer

    from training.core import resolve_demo_model
    from training.core.tiny import save_tiny, tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(resolve_demo_model())
    model = tiny_llama(
        tokenizer,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        max_position_embeddings=2048,
    )
    tmp = save_tiny(model, tokenizer, Path(tempfile.mkdtemp(dir=cache)))
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
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default 4 (--device: 16, 1.1B 8)"
    )
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--steps", type=int, default=None, help="default: tiny 8, demo 3 (--device: 20, 1.1B 10)"
    )
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="our trainer with each efficiency technique switched in turn (default models: "
        "tiny full, demo LoRA; steps per epoch: tiny 4, demo 2)",
    )
    parser.add_argument("--epochs", type=int, default=3, help="--ablation: epochs per variant")
    parser.add_argument("--worker", choices=("ours", "trl", "ablation"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    bench_train_device.add_arguments(parser)
    args = parser.parse_args()

    if args.worker:
        run = {"ours": run_ours, "trl": run_trl, "ablation": run_ablation}[args.worker]
        print(json.dumps(run(json.loads(args.spec))))
        return

    if args.device:
        bench_train_device.run_matrix(args)
        return
    args.batch_size = args.batch_size or 4
    from training.core import resolve_demo_model
    from training.core.loading import model_cache_dir

    cache = model_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    if args.ablation:
        ablation(args, cache)
        return
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
        steps = args.steps or (3 if name == "demo" else 8)
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
