"""Our DPO trainer against TRL's DPOTrainer on one device: pairs/s and peak memory.

``python3 bench/bench_train.py --device cuda`` runs this matrix; it needs only ``training/core``
from this repository (no Django), torch, transformers, tokenizers, and TRL with ``datasets``
(wheels are enough: no network is used). Models are built from a config with random weights:

- the SmolLM2-135M architecture (30 layers, hidden 576, vocabulary 49152), batch 16;
- with ``--llama-1b``, a Llama-shaped 1.1B model (22 layers, hidden 2048), batch 8.

Pairs are chat-templated texts of a small vocabulary (prompt 30 words, chosen 110, rejected
100; one word-level token per word), full fine-tuning, reference log-probs precomputed on both
sides (TRL: ``precompute_ref_log_probs=True``, otherwise its defaults). TRL runs twice per
precision: its default (gradient checkpointing on) and checkpointing off; ``bf16`` for TRL is
its ``bf16=True`` (float32 weights under autocast). Ours runs each ``--checkpointing`` policy,
in ``fp32`` and in each ``--bf16-modes`` precision (the 1.1B model in the first only).

Each run is its own process. Rates count the same steps on both sides: the time from the end
of the first (warm-up) optimizer step to the end of the last, synchronised with the device,
over the pairs those steps trained. Peak memory is the process's peak allocated CUDA memory
(peak RSS on CPU), model loading and the reference pass included for both.

``--device cpu --smoke`` runs the same matrix on 2-layer models at a few steps, to check the
script before a GPU run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_TEXT = (
    "the model answers each question with care and gives a short clear reason before it "
    "states the result so that a reader can check every step of the argument without any "
    "extra context while a weaker reply wanders off topic repeats itself or guesses"
)
WORDS = _TEXT.split()

# name -> (LlamaConfig fields, batch size, steps); "smoke" variants are 2-layer stand-ins.
MODELS: dict[str, tuple[dict[str, Any], int, int]] = {
    "smollm2-135m": (
        {
            "vocab_size": 49152,
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "max_position_embeddings": 2048,
            "rope_theta": 100000.0,
            "tie_word_embeddings": True,
        },
        16,
        20,
    ),
    "llama-1.1b": (
        {
            "vocab_size": 32000,
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "max_position_embeddings": 2048,
            "tie_word_embeddings": False,
        },
        8,
        10,
    ),
}
SMOKE = {
    "vocab_size": 1024,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
}


def make_pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` conversational pairs: prompt 30 words, chosen 110, rejected 100."""
    rng = random.Random(seed)

    def text(words: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."

    return [
        {
            "prompt": [{"role": "user", "content": text(30)}],
            "chosen": [{"role": "assistant", "content": text(110)}],
            "rejected": [{"role": "assistant", "content": text(100)}],
        }
        for _ in range(n)
    ]


# ---------------------------------------------------------------------------------------------
# workers (each in its own process)


def _peak(device: str) -> int:
    import torch

    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _rate(step_seconds: list[float], batch_size: int) -> float:
    """Pairs per second over the steps after the first (warm-up) one."""
    timed = step_seconds[1:]
    return batch_size * len(timed) / sum(timed)


def build_model(spec: dict[str, Any]) -> dict[str, Any]:
    """Save a random-weight Llama of ``spec["config"]`` with a word tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.core.tiny import word_tokenizer

    tokenizer = word_tokenizer([*WORDS, *(w.capitalize() for w in WORDS), "."])
    config = LlamaConfig(
        **spec["config"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    with torch.device(spec["device"]):
        model = LlamaForCausalLM(config)
    model.save_pretrained(spec["dir"])
    tokenizer.save_pretrained(spec["dir"])
    device_name = platform.processor() or platform.machine()
    if spec["device"] == "cuda":
        device_name = torch.cuda.get_device_name()
    return {"parameters": sum(p.numel() for p in model.parameters()), "device": device_name}


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from training.core.config import DPOConfig
    from training.core.data import pair_from_row
    from training.core.trainer import train_dpo

    if spec["device"] == "cpu":
        torch.set_num_threads(spec["threads"])
    pairs = [pair_from_row(r) for r in make_pairs(spec["batch_size"] * spec["steps"])]
    config = DPOConfig(
        lora=False,
        learning_rate=spec["lr"],
        batch_size=spec["batch_size"],
        max_length=spec["max_length"],
        max_prompt_length=spec["max_length"],
        max_steps=spec["steps"],
        epochs=1,
        heldout_fraction=0.0,
        warmup_ratio=0.0,
        device=spec["device"],
        precision=spec["precision"],
        gradient_checkpointing=spec["checkpointing"],
        compile=spec.get("compile", "none"),
    )
    with tempfile.TemporaryDirectory(dir=spec["work_dir"]) as tmp:
        result = train_dpo(pairs, spec["model_dir"], Path(tmp) / "v", config)
    seconds = [h["seconds"] for h in result.history]
    return {
        "pairs_per_s": _rate(seconds, spec["batch_size"]),
        "first_step_s": seconds[0],
        "peak_bytes": result.peak_memory_bytes,
        "steps": result.steps,
        "final_loss": result.history[-1]["loss"],
        "django_loaded": "django" in sys.modules,
    }


def run_trl(spec: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    device = spec["device"]
    if device == "cpu":
        torch.set_num_threads(spec["threads"])
    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync(device)
            self.marks = [time.perf_counter()]

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync(device)
            self.marks.append(time.perf_counter())

    clock = StepClock()
    with tempfile.TemporaryDirectory(dir=spec["work_dir"]) as tmp:
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
            bf16=spec["precision"] == "bf16",
            gradient_checkpointing=spec["checkpointing"],
            report_to=[],
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = trl.DPOTrainer(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(
                make_pairs(spec["batch_size"] * spec["steps"])
            ),
            processing_class=tokenizer,
            callbacks=[clock],
        )
        trainer.train()
    seconds = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    return {
        "pairs_per_s": _rate(seconds, spec["batch_size"]),
        "peak_bytes": _peak(device),
        "steps": len(seconds),
        "weights_dtype": str(next(model.parameters()).dtype),
    }


WORKERS = {"build": build_model, "ours": run_ours, "trl": run_trl}


def run_worker(which: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    env["PYTHONWARNINGS"] = "ignore"
    env["HF_HUB_OFFLINE"] = "1"
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


# ---------------------------------------------------------------------------------------------
# driver


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("torch", "transformers", "trl", "datasets", "accelerate", "tokenizers"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def matrix(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The runs to make, in order: per model and precision, TRL's two baselines then ours."""
    models = ["smollm2-135m", *(["llama-1.1b"] if args.llama_1b else [])]
    runs = []
    for model in models:
        precisions = _csv(args.precisions) if model == "smollm2-135m" else ["bf16"]
        for precision in precisions:
            trl_policies = [True, False] if model == "smollm2-135m" else [True]
            for on in trl_policies:
                runs.append(
                    {"model": model, "trainer": "trl", "precision": precision, "checkpointing": on}
                )
            ours = ["fp32"] if precision == "fp32" else _csv(args.bf16_modes)
            if model == "llama-1.1b":
                ours = ours[:1]  # the first bf16 mode only: the matrix must stay under 8 minutes
            for mode in ours:
                for policy in _csv(args.checkpointing):
                    for compile_mode in _csv(args.compile):
                        runs.append(
                            {
                                "model": model,
                                "trainer": "ours",
                                "precision": mode,
                                "group": precision,
                                "checkpointing": policy,
                                "compile": compile_mode,
                            }
                        )
    return runs


def _label(run: dict[str, Any]) -> str:
    if run["trainer"] == "trl":
        return f"TRL, checkpointing {'on' if run['checkpointing'] else 'off'}"
    label = f"ours {run['precision']}, checkpointing {run['checkpointing']}"
    if run.get("compile", "none") != "none":
        label += f", compiled {run['compile']}"
    return label


def print_table(runs: list[dict[str, Any]], device: str) -> None:
    unit = "GB" if device == "cuda" else "GB RSS"
    header = (
        f"{'model':<18} {'prec':<5} {'trainer':<60} {'pairs/s':>8} {'peak ' + unit:>10} | "
        f"{'vs TRL ckpt on':>20} | {'vs TRL ckpt off':>20}"
    )
    print(header)
    print("-" * len(header))
    baselines: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for run in runs:
        group = run.get("group", run["precision"])
        if run["trainer"] == "trl":
            baselines[(run["model"], group, run["checkpointing"])] = run
        compare = []
        for on in (True, False):
            base = baselines.get((run["model"], group, on))
            if run["trainer"] == "trl" or base is None:
                compare.append(f"{'':>20}")
                continue
            speed = run["pairs_per_s"] / base["pairs_per_s"]
            memory = run["peak_bytes"] / base["peak_bytes"]
            meets = "yes" if speed >= 1.5 and memory <= 1.0 else "no"
            compare.append(f"{speed:>5.2f}x {memory:>5.2f}x mem {meets:>3}")
        print(
            f"{run['model']:<18} {group:<5} {_label(run):<60} {run['pairs_per_s']:>8.2f} "
            f"{run['peak_bytes'] / 1e9:>10.2f} | {compare[0]} | {compare[1]}"
        )
    print(
        "\nspeed = our pairs/s over TRL's; mem = our peak over TRL's; yes = at least 1.5x the "
        "speed at no more memory. The warm-up (first) optimizer step is excluded on both sides."
    )
    for run in runs:
        if run.get("compile", "none") != "none":
            print(f"{_label(run)}: first step (compiling) {run['first_step_s']:.1f} s")


def run_matrix(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.steps is not None and args.steps < 2:
        raise SystemExit("--steps: at least 2 with --device (the first step is the warm-up)")
    started = time.perf_counter()
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-train-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    found = versions()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in found.items()), flush=True)
    runs = matrix(args)
    built: dict[str, dict[str, Any]] = {}
    try:
        for run in runs:
            config, batch_size, steps = MODELS[run["model"]]
            if args.smoke:
                config, batch_size, steps = SMOKE, 4, 3
            batch_size = args.batch_size or batch_size
            steps = args.steps or steps
            if args.smoke:
                run["model"] = f"{run['model']} smoke"
            model_dir = work_dir / run["model"].replace(" ", "-")
            if run["model"] not in built:
                print(f"building {run['model']} ...", file=sys.stderr, flush=True)
                built[run["model"]] = run_worker(
                    "build", {"config": config, "device": args.device, "dir": str(model_dir)}
                )
            spec = {
                **run,
                "device": args.device,
                "model_dir": str(model_dir),
                "work_dir": str(work_dir),
                "batch_size": batch_size,
                "steps": steps,
                "max_length": args.max_length,
                "lr": args.lr,
                "threads": args.threads,
            }
            print(f"running {run['model']}: {_label(run)} ...", file=sys.stderr, flush=True)
            run.update(run_worker(run["trainer"], spec), batch_size=batch_size, steps=steps)
    finally:
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    for name, info in built.items():
        print(f"{name}: {info['parameters'] / 1e6:.1f}M parameters on {info['device']}")
    print_table(runs, args.device)
    print(f"whole matrix: {time.perf_counter() - started:.0f} s")
    if args.json:
        report = {"versions": found, "models": built, "runs": runs, "device": args.device}
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the device matrix (``bench_train.py --device ...``)."""
    group = parser.add_argument_group("device matrix (--device)")
    group.add_argument("--device", choices=("cuda", "cpu"), help="run the matrix on this device")
    group.add_argument("--smoke", action="store_true", help="2-layer models, batch 4, 3 steps")
    group.add_argument("--llama-1b", action="store_true", help="add the 1.1B Llama (bf16)")
    group.add_argument("--precisions", default="bf16,fp32", help="TRL's columns: bf16,fp32")
    group.add_argument(
        "--bf16-modes",
        default="bf16,bf16-autocast",
        help="our precisions in the bf16 column (the 1.1B model: the first only)",
    )
    group.add_argument(
        "--checkpointing", default="none,selective,full", help="our checkpointing policies"
    )
    group.add_argument(
        "--compile",
        default="none",
        help="our torch.compile modes, e.g. none,layers (a compiled run's first step, which "
        "compiles, is left out of pairs/s like every run's first step and printed apart)",
    )
    group.add_argument("--work-dir", help="keep models here (default: a temporary directory)")
    group.add_argument("--json", help="also write the results to this file")


def main() -> None:
    if "--worker" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", choices=sorted(WORKERS))
        parser.add_argument("--spec")
        args = parser.parse_args()
        print(json.dumps(WORKERS[args.worker](json.loads(args.spec))))
        return
    raise SystemExit("run it as: python3 bench/bench_train.py --device cuda")


if __name__ == "__main__":
    main()
