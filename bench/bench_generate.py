"""Batched against one-sequence-at-a-time generation on the demo model.

python bench/bench_generate.py [--prompts 8] [-k 2] [--max-new-tokens 64] [--batch-size 16]
python bench/bench_generate.py --seeded [-k 4] [--batch-size 8]   # evaluation's sampling

``--seeded`` measures how evaluation and the gate sample: every prompt with a generator of its
own seed, one prompt per forward pass (the k samples of one prompt) against several prompts per
forward pass (`generate_seeded`), and counts the samples that came out the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = [
    "Tell me a fun fact about octopuses.",
    "What is the capital of Italy, and what is it known for?",
    "Write a haiku about rain.",
    "How do I boil an egg?",
    "Explain photosynthesis to a ten-year-old.",
    "Give three tips for a job interview.",
    "Why is the sky blue?",
    "Suggest a name for a friendly robot.",
    "What should I pack for a weekend hiking trip?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "How many continents are there? List them.",
    "What is a prime number?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("-k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeded", action="store_true", help="evaluation's sampling, see above")
    args = parser.parse_args()
    if args.seeded:
        seeded(args)
        return

    from training.core import generation, load_model

    loaded = load_model(args.model)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[: args.prompts]]
    rows = []
    for label, batch_size in (("batched", args.batch_size), ("one at a time", 1)):
        generation.generate(
            loaded,
            prompts,
            k=args.k,
            max_new_tokens=args.max_new_tokens,
            seed=0,
            batch_size=batch_size,
        )
        stats = generation.last_stats
        rows.append((label, batch_size, stats.sequences, stats.new_tokens, stats.seconds))
    print(
        f"{args.prompts} prompts x k={args.k}, up to {args.max_new_tokens} new tokens, "
        f"temperature 0.8, top_p 0.95, model {args.model}"
    )
    header = f"{'mode':<14} {'batch':>5} {'seqs':>5} {'tokens':>7} {'seconds':>8} {'tok/s':>7}"
    print(header)
    print("-" * len(header))
    for label, batch_size, seqs, tokens, seconds in rows:
        print(
            f"{label:<14} {batch_size:>5} {seqs:>5} {tokens:>7} {seconds:>8.2f} "
            f"{tokens / seconds:>7.1f}"
        )
    speedup = (rows[0][3] / rows[0][4]) / (rows[1][3] / rows[1][4])
    print(f"batched is {speedup:.2f}x the tokens/s of one-at-a-time")


def seeded(args: argparse.Namespace) -> None:
    import time

    from training.core import generation, load_model

    loaded = load_model(args.model)
    prompts = [[{"role": "user", "content": q}] for q in QUESTIONS[: args.prompts]]
    seeds = list(range(len(prompts)))
    how = {"k": args.k, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": args.max_new_tokens}
    started = time.perf_counter()
    alone = [
        generation.generate(loaded, [p], seed=s, batch_size=args.k, **how)[0]
        for p, s in zip(prompts, seeds, strict=True)
    ]
    alone_s = time.perf_counter() - started
    started = time.perf_counter()
    together: dict[int, list] = {}
    for batch in generation.generate_seeded(
        loaded, prompts, seeds, batch_size=args.batch_size, **how
    ):
        together.update(batch)
    together_s = time.perf_counter() - started
    tokens = sum(s.token_count for row in alone for s in row)
    tokens_b = sum(s.token_count for row in together.values() for s in row)
    same = sum(
        a.token_ids == b.token_ids
        for i, row in enumerate(alone)
        for a, b in zip(row, together[i], strict=True)
    )
    print(
        f"{len(prompts)} prompts x k={args.k}, up to {args.max_new_tokens} new tokens, "
        f"temperature 0.8, top_p 0.95, model {args.model}, a seed per prompt"
    )
    header = f"{'mode':<22} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tok/s':>7}"
    print(header)
    print("-" * len(header))
    print(
        f"{'one prompt per pass':<22} {args.k:>5} {tokens:>7} {alone_s:>8.2f} {tokens / alone_s:>7.1f}"
    )
    print(
        f"{'prompts batched':<22} {args.batch_size:>5} {tokens_b:>7} {together_s:>8.2f} "
        f"{tokens_b / together_s:>7.1f}"
    )
    print(
        f"batched is {(tokens_b / together_s) / (tokens / alone_s):.2f}x the tokens/s; "
        f"{same} of {len(prompts) * args.k} samples identical"
    )


if __name__ == "__main__":
    main()
