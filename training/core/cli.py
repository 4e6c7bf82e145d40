"""``python -m training``: train and generate without Django."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import (
    CHECKPOINTING,
    COMPILE_BACKENDS,
    COMPILE_MODES,
    LOSSES,
    OPTIMIZER_IMPLS,
    PRECISIONS,
    DPOConfig,
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="DPO-train a model on preference pairs")
    train.add_argument("--data", required=True, help="preference pairs, JSONL (TRL formats)")
    train.add_argument(
        "--model", required=True, help="model directory, .gguf file, 'demo' or hub id"
    )
    train.add_argument("--out", required=True, help="version directory to create")
    train.add_argument("--loss", choices=LOSSES, default=None)
    train.add_argument("--beta", type=float, default=None)
    train.add_argument("--epsilon", type=float, default=None, help="label-flip rate (robust)")
    train.add_argument(
        "--lora",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train a LoRA adapter (default) or, with --no-lora, all weights",
    )
    train.add_argument("--lr", type=float, default=None, help="learning rate")
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--max-steps", type=int, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--grad-accum", type=int, default=None)
    train.add_argument("--max-length", type=int, default=None)
    train.add_argument("--reference", choices=("base", "policy"), default=None)
    train.add_argument("--heldout-fraction", type=float, default=None)
    train.add_argument(
        "--gradient-checkpointing",
        nargs="?",
        const="full",
        choices=CHECKPOINTING,
        default=None,
        help="activation checkpointing policy (the flag alone: full)",
    )
    train.add_argument("--precision", choices=PRECISIONS, default=None)
    train.add_argument("--optimizer-impl", choices=OPTIMIZER_IMPLS, default=None)
    train.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default=None,
        help="torch.compile each decoder layer (layers) or the whole backbone (model)",
    )
    train.add_argument("--compile-backend", choices=COMPILE_BACKENDS, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--device", default=None)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--nproc",
        type=_positive_int,
        default=1,
        help="data-parallel processes on this machine, launched with torchrun (default 1)",
    )
    train.add_argument(
        "--config",
        default=None,
        help="JSON file of DPOConfig fields; the flags above override it",
    )
    train.add_argument(
        "--reference-model",
        default=None,
        help="reference model spec (default: decided by the config's 'reference')",
    )
    train.add_argument(
        "--progress-json",
        action="store_true",
        help="print each optimizer step as a JSON line on stdout, before the summary",
    )

    gen = sub.add_parser("generate", help="sample k completions per prompt")
    gen.add_argument("--model", required=True, help="model directory, version, .gguf or 'demo'")
    gen.add_argument("--prompts", required=True, help="JSONL of message lists or {'prompt': ...}")
    gen.add_argument("-k", type=int, default=2, help="completions per prompt")
    gen.add_argument("--out", required=True, help="JSONL to write, one row per completion")
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped run: keep the prompts already in --out, sample the others",
    )
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _config(args: argparse.Namespace) -> DPOConfig:
    overrides: dict[str, Any] = {
        "loss": args.loss,
        "beta": args.beta,
        "epsilon": args.epsilon,
        "lora": args.lora,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "grad_accum_steps": args.grad_accum,
        "max_length": args.max_length,
        "reference": args.reference,
        "heldout_fraction": args.heldout_fraction,
        "gradient_checkpointing": args.gradient_checkpointing,
        "precision": args.precision,
        "optimizer_impl": args.optimizer_impl,
        "compile": args.compile,
        "compile_backend": args.compile_backend,
        "seed": args.seed,
        "device": args.device,
    }
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(_config_file(Path(args.config)))
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["num_processes"] = int(os.environ.get("WORLD_SIZE", args.nproc))
    if args.lr is not None:
        lora = values.get("lora", DPOConfig.lora)
        values["lora_learning_rate" if lora else "learning_rate"] = args.lr
    return DPOConfig.from_dict(values)


def _config_file(path: Path) -> dict[str, Any]:
    from .data import DataError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(f"--config {path}: expected a JSON object of DPOConfig fields")
    return data


def _train(args: argparse.Namespace) -> dict[str, Any] | None:
    # torch loads only once a command runs, so `--help` and argument errors answer at once
    from .data import read_pairs
    from .distributed import launched
    from .trainer import train_dpo

    config = _config(args)
    main_rank = not launched() or int(os.environ.get("RANK", "0")) == 0
    pairs = read_pairs(args.data)
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(f"output already exists: {out}")
    bar = None
    if not args.no_progress and main_rank:
        from tqdm import tqdm

        bar = tqdm(total=None, desc="train", unit="step", file=sys.stderr)

    def progress(step: int, total: int, loss: float, eta_s: float | None) -> None:
        if bar is not None:
            bar.total = total
            bar.set_postfix(loss=f"{loss:.4f}")
            bar.update(step - bar.n)
        if args.progress_json:
            line = {"step": step, "total": total, "loss": loss, "eta_s": eta_s}
            print(json.dumps(line), flush=True)

    try:
        result = train_dpo(
            pairs, args.model, out, config, progress=progress, reference_spec=args.reference_model
        )
    finally:
        if bar is not None:
            bar.close()
    if not main_rank:
        return None
    return {
        "version": result.version_dir,
        "num_processes": result.num_processes,
        "steps": result.steps,
        "pairs_per_s": round(result.pairs_per_s, 4),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "peak_memory_bytes": result.peak_memory_bytes,
        "train_seconds": round(result.train_seconds, 2),
        "total_seconds": round(result.total_seconds, 2),
        "final": result.final,
        "heldout_before": result.heldout_before,
        "heldout_after": result.heldout_after,
    }


def _done_prompts(out: Path, prompts: list[Any], k: int) -> set[int]:
    """For --resume: the prompts whose k rows are all in ``out``.

    Rows of a prompt cut short by the stop (and a last line written in half) are dropped from
    the file, so that appending the rest leaves exactly k rows per prompt.
    """
    from .data import DataError

    rows: dict[int, dict[int, str]] = {}
    with out.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                i, j = int(row["prompt_index"]), int(row["sample_index"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # the half-written line of a stopped run
            if not 0 <= i < len(prompts) or row.get("prompt") != prompts[i]:
                raise DataError(
                    f"{out}, line {number}: prompt {i} is not in the prompts file: "
                    "resume with the prompts it was started with"
                )
            if not 0 <= j < k:
                raise DataError(f"{out}, line {number}: sample {j} does not fit -k {k}")
            rows.setdefault(i, {})[j] = line if line.endswith("\n") else line + "\n"
    done = {i for i, samples in rows.items() if len(samples) == k}
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i in sorted(done):
            fh.writelines(rows[i][j] for j in range(k))
    os.replace(tmp, out)
    return done


def _generate(args: argparse.Namespace) -> dict[str, Any]:
    # torch loads only once a command runs, so `--help` and argument errors answer at once
    from . import generation
    from .data import read_prompts
    from .loading import load_model

    prompts = read_prompts(args.prompts)
    out = Path(args.out)
    if out.exists() and not args.resume:
        raise FileExistsError(f"output already exists: {out} (--resume continues it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done_prompts(out, prompts, args.k) if out.exists() else set()
    loaded = load_model(args.model) if len(done) < len(prompts) else None
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(
            total=args.k * (len(prompts) - len(done)), desc="generate", unit="row", file=sys.stderr
        )
    written = unfinished = 0
    last: generation.Batch | None = None
    try:
        if loaded is not None:
            batches = generation.generate_batches(
                loaded,
                prompts,
                k=args.k,
                temperature=args.temperature,
                top_p=args.top_p,
                max_new_tokens=args.max_new_tokens,
                seed=args.seed,
                batch_size=args.batch_size,
                skip=done,
            )
            # appended prompt by prompt as each is done, so a stopped run keeps what it sampled
            with out.open("a", encoding="utf-8") as fh:
                for last in batches:
                    for i, samples in sorted(last.completed.items()):
                        for j, sample in enumerate(samples):
                            row = {"prompt_index": i, "sample_index": j, "prompt": prompts[i]}
                            fh.write(json.dumps({**row, **sample.to_dict()}, ensure_ascii=False))
                            fh.write("\n")
                            written += 1
                            unfinished += not sample.finished
                    fh.flush()
                    if bar is not None:
                        bar.set_postfix_str(f"{last.tokens_per_s:.1f} tok/s")
                        bar.update(len(last.samples))
    finally:
        if bar is not None:
            bar.close()
    return {
        "out": str(out),
        "prompts": len(prompts),
        "resumed_prompts": len(done),
        "completions": written,
        "truncated_share": round(unfinished / written, 4) if written else None,
        "new_tokens": last.new_tokens if last else 0,
        "seconds": round(last.seconds, 2) if last else 0.0,
        "tokens_per_s": round(last.tokens_per_s, 1) if last else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # after the verbosity is set, which transformers reads when it is first imported
    from .data import DataError
    from .loading import ModelLoadError
    from .versions import IncompleteVersionError

    if args.command == "train" and args.nproc > 1:
        from .distributed import launched

        if not launched():
            return _launch(args, list(sys.argv[1:] if argv is None else argv))
    try:
        summary = _train(args) if args.command == "train" else _generate(args)
    except (DataError, ModelLoadError, IncompleteVersionError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.command == "train" and "torch" in sys.modules:
            from .distributed import teardown

            teardown()
    if summary is not None:
        print(json.dumps(summary, default=str))
    return 0


def _launch(args: argparse.Namespace, argv: list[str]) -> int:
    """Run this same command on ``--nproc`` processes under torchrun; its exit status."""
    from .distributed import launch

    if Path(args.out).exists():
        print(f"error: output already exists: {args.out}", file=sys.stderr)
        return 2
    # torchrun's own parser would read --nproc as an abbreviation of its --nproc-per-node;
    # the ranks learn the count from WORLD_SIZE instead
    proc = launch(args.nproc, _without_nproc(argv))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        print("error: interrupted", file=sys.stderr)
        return 130


def _without_nproc(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
