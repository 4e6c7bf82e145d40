"""Active pair selection against random order: held-out reward accuracy per judgment spent.

    make bench-active                                # 3 seeds, every strategy, a few minutes
    .venv/bin/python bench/bench_active.py --pool-prompts 8 --budget 16 --step 8 --seeds 0

A fixed labelled pool: prompts of a small word vocabulary, each with pairs of word-sequence
completions; the better completion of a pair is the one with more "good" words (the ground
truth, never tied). Per seed and strategy, a project of its own gets the pool with overlap 2
and the strategy as its ``pair_selection``; 3 simulated annotators, each wrong with
probability 0.1, take turns asking the real queue (``annotate.services.next_assignment``) for a
pair and judging it on the side it was shown (``submit_judgment``), so the order, the
disagreement and coverage figures and the undo-free judgment path are the application's own.

Every ``--step`` judgments a policy is trained from the reference, a random-weight tiny Llama
(``training.core.tiny``, the same for every strategy of a seed), with the sigmoid DPO loss on
the pairs judged so far (the majority label of each pair; a pair whose two judges disagree is
left out), and then:

- held-out reward accuracy is measured on a fixed held-out set of pairs on other prompts: the
  share whose implicit-reward margin (policy-vs-reference log-ratio of the better completion
  minus that of the worse) is positive, a margin of exactly zero counting one half;
- the open pairs are scored with that policy (``training.services.active.score_pair_margins``
  with the models in memory), which is what the ``uncertainty`` order reads.

The run prints a table (mean and standard deviation over seeds at each step), the judgments
each strategy needs to reach random's final mean accuracy, and writes a plot and the numbers
under ``var/bench-active/``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STRATEGIES = ("random", "uncertainty", "disagreement", "coverage")
GOOD = ("good", "great", "yes", "sun", "star")
NEUTRAL = (  # noqa: SIM905
    "the a is of and to in it that this be list tuple write function hello world one two "
    "three four five red green blue cat dog tree moon sky sea"
).split()
TOPICS = ("python", "colours", "animals", "weather", "numbers", "space", "ocean", "trees")
WORDS = (*GOOD, *NEUTRAL, *TOPICS, "bad", "no")
ANNOTATORS = 3
NOISE = 0.1
OVERLAP = 2


@dataclass
class PoolPair:
    prompt: str
    better: str
    worse: str


def _completion(rng: random.Random, good: int) -> str:
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 5))]
    for _ in range(good):
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD))
    return " ".join(words)


def make_pool(n_prompts: int, pairs_per_prompt: int, seed: int, tag: str) -> list[PoolPair]:
    """Pairs of completions of ``n_prompts`` prompts; the better one has more good words."""
    rng = random.Random(f"{tag}-{seed}")
    out = []
    for i in range(n_prompts):
        prompt = f"{TOPICS[i % len(TOPICS)]} {tag} {i}"
        for _ in range(pairs_per_prompt):
            low = rng.randint(0, 1)
            high = low + rng.randint(1, 2)
            out.append(PoolPair(prompt, _completion(rng, high), _completion(rng, low)))
    return out


def setup_django(out: Path) -> None:
    """A database of the benchmark's own, unless Django is set up already (a test)."""
    from django.apps import apps

    if apps.ready:
        return
    out.mkdir(parents=True, exist_ok=True)
    database = Path(tempfile.mkdtemp(prefix="bench-active-")) / "bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")
    os.environ.setdefault("PREFLOOP_VAR_DIR", str(out / "var"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{database}")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_project(
    pool: Sequence[PoolPair], strategy: str, seed: int, name: str
) -> tuple[Any, dict[int, str]]:
    """A project holding the pool, the strategy chosen, ``ANNOTATORS`` members; and the right
    answer ("a" or "b") of each of its comparisons."""
    from django.contrib.auth import get_user_model

    from annotate.models import Comparison, Completion, Membership, Project, Prompt

    project = Project.objects.create(
        name=name,
        overlap=OVERLAP,
        pair_selection=strategy,
        gold_rate=0.0,
        repeat_rate=0.0,
        lease_seconds=600,
    )
    users = get_user_model()
    for i in range(ANNOTATORS):
        user, _ = users.objects.get_or_create(username=f"sim-{i}")
        Membership.objects.create(project=project, user=user)
    prompts: dict[str, Any] = {}
    truth: dict[int, str] = {}
    random.seed(f"keys-{seed}")  # the random keys drawn at creation: one draw per seed
    for index, item in enumerate(pool):
        prompt = prompts.get(item.prompt)
        if prompt is None:
            prompt = prompts[item.prompt] = Prompt.objects.create(
                project=project, messages=[{"role": "user", "content": item.prompt}]
            )
        better = Completion.objects.create(prompt=prompt, text=item.better)
        worse = Completion.objects.create(prompt=prompt, text=item.worse)
        a, b = (better, worse) if index % 2 == 0 else (worse, better)
        row = Comparison.objects.create(
            project=project, prompt=prompt, completion_a=a, completion_b=b
        )
        truth[row.pk] = "a" if a is better else "b"
    return project, truth


def judge_some(project: Any, n: int, turn: int, rng: random.Random, truth: dict[int, str]) -> int:
    """``n`` judgments by the simulated annotators, in turns, through the real queue; returns
    the next turn. An annotator with nothing left passes."""
    import uuid

    from django.contrib.auth import get_user_model

    from annotate import services

    users = list(get_user_model().objects.filter(username__startswith="sim-").order_by("username"))
    done = idle = 0
    while done < n and idle < ANNOTATORS:
        user = users[turn % ANNOTATORS]
        turn += 1
        lease = services.next_assignment(project, user)
        if lease is None:
            idle += 1
            continue
        idle = 0
        meant = truth[lease.comparison_id]
        if rng.random() < NOISE:
            meant = "b" if meant == "a" else "a"
        shown = "left" if (meant == "a") == lease.left_is_a else "right"
        services.submit_judgment(
            user, lease.comparison_id, services.JudgmentInput(choice=shown, client_id=uuid.uuid4())
        )
        done += 1
    return turn


def labelled_pairs(project: Any) -> list[tuple[Any, str, str]]:
    """(prompt messages, chosen, rejected) of each judged pair with a majority label."""
    from annotate.models import Comparison, Judgment

    votes: dict[int, list[str]] = {}
    for comparison_id, choice in Judgment.objects.filter(project=project).values_list(
        "comparison_id", "choice"
    ):
        votes.setdefault(comparison_id, []).append(choice)
    rows = Comparison.objects.filter(pk__in=votes).select_related(
        "prompt", "completion_a", "completion_b"
    )
    out = []
    for row in rows.order_by("pk"):
        a, b = votes[row.pk].count("a"), votes[row.pk].count("b")
        if a == b:
            continue
        winner, loser = (row.completion_a, row.completion_b)[:: 1 if a > b else -1]
        out.append((row.prompt.messages, winner.text, loser.text))
    return out


class Trainer:
    """DPO of a copy of the reference on the labelled pairs, and the accuracy it reaches."""

    def __init__(self, reference: Any, tokenizer: Any, args: argparse.Namespace) -> None:
        self.reference, self.tokenizer, self.args = reference, tokenizer, args

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def train(self, pairs: Sequence[tuple[Any, str, str]], seed: int) -> Any:
        import torch

        from training.core.data import TokenizedPair
        from training.core.generation import _prompt_ids
        from training.core.logprobs import build_batch, completion_logps
        from training.core.losses import preference_loss

        torch.manual_seed(seed)
        policy = copy.deepcopy(self.reference)
        if not pairs:
            return policy
        tokenized = [
            TokenizedPair(_prompt_ids(self.tokenizer, m), self.ids(c), self.ids(r))
            for m, c, r in pairs
        ]
        pad = self.tokenizer.pad_token_id
        with torch.no_grad():
            self.reference.eval()
            ref = [
                completion_logps(self.reference, build_batch([p], pad, False)) for p in tokenized
            ]
        optimizer = torch.optim.Adam(policy.parameters(), lr=self.args.lr)
        policy.train()
        order = list(range(len(tokenized)))
        rng = random.Random(seed)
        for _ in range(self.args.epochs):
            rng.shuffle(order)
            for start in range(0, len(order), self.args.batch):
                chunk = order[start : start + self.args.batch]
                batch = build_batch([tokenized[i] for i in chunk], pad, False)
                logps = completion_logps(policy, batch)
                ref_logps = torch.stack([ref[i] for i in chunk])  # (B, 2)
                n = len(chunk)
                out = preference_loss(
                    logps[:n], logps[n:], ref_logps[:, 0], ref_logps[:, 1], beta=self.args.beta
                )
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
        policy.eval()
        return policy

    def accuracy(self, policy: Any, heldout: Sequence[PoolPair]) -> float:
        from training.core.scoring import sequence_logprobs

        prompts = [[{"role": "user", "content": p.prompt}] for p in heldout for _ in range(2)]
        completions = [self.ids(t) for p in heldout for t in (p.better, p.worse)]
        log_pi = sequence_logprobs(policy, self.tokenizer, prompts, completions)
        log_ref = sequence_logprobs(self.reference, self.tokenizer, prompts, completions)
        reward = [x - y for x, y in zip(log_pi, log_ref, strict=True)]
        margins = [reward[2 * i] - reward[2 * i + 1] for i in range(len(heldout))]
        # a margin of exactly zero (the untrained reference) counts as a coin flip
        return sum(1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins) / len(heldout)


def run_one(
    strategy: str, seed: int, pool: list[PoolPair], heldout: list[PoolPair], args: Any
) -> list[tuple[int, float]]:
    """(judgments, held-out accuracy) after each step of one strategy and seed."""
    from training.core.tiny import tiny_llama, word_tokenizer
    from training.services import active, dispatch

    tokenizer = word_tokenizer(WORDS)
    reference = tiny_llama(tokenizer, seed=seed)
    trainer = Trainer(reference, tokenizer, args)
    with dispatch.in_process():
        name = f"{strategy} seed {seed} {time.time_ns()}"
        project, truth = make_project(pool, strategy, seed, name)
        rng = random.Random(f"annotators-{seed}")
        curve = [(0, trainer.accuracy(reference, heldout))]
        turn = spent = 0
        while spent < args.budget:
            turn = judge_some(project, args.step, turn, rng, truth)
            spent += args.step
            policy = trainer.train(labelled_pairs(project), seed)
            curve.append((spent, trainer.accuracy(policy, heldout)))
            if strategy == "uncertainty":
                models = ((policy, tokenizer), (reference, tokenizer))
                active.score_pair_margins(project.pk, models=models)
    return curve


def summarise(results: dict[str, dict[int, list[tuple[int, float]]]]) -> dict[str, Any]:
    """Mean and standard deviation per step, and the judgments each strategy needs to reach
    random's final mean accuracy (None: never within the budget)."""
    table: dict[str, list[dict[str, float]]] = {}
    for strategy, per_seed in results.items():
        curves = list(per_seed.values())
        rows = []
        for i, (spent, _) in enumerate(curves[0]):
            values = [curve[i][1] for curve in curves]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append({"judgments": spent, "mean": statistics.fmean(values), "sd": sd})
        table[strategy] = rows
    target = table["random"][-1]["mean"] if "random" in table else None
    reach: dict[str, int | None] = {}
    for strategy, rows in table.items():
        hit = [r["judgments"] for r in rows if target is not None and r["mean"] >= target - 1e-9]
        reach[strategy] = int(hit[0]) if hit else None
    return {"table": table, "random_final": target, "judgments_to_random_final": reach}


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, rows in summary["table"].items():
        x = [r["judgments"] for r in rows]
        mean = [r["mean"] for r in rows]
        sd = [r["sd"] for r in rows]
        ax.plot(x, mean, marker="o", label=strategy)
        low = [m - s for m, s in zip(mean, sd, strict=True)]
        high = [m + s for m, s in zip(mean, sd, strict=True)]
        ax.fill_between(x, low, high, alpha=0.15)
    ax.set_xlabel("judgments")
    ax.set_ylabel("held-out reward accuracy")
    ax.set_title("Pair selection: mean ± sd over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pool-prompts", type=int, default=20)
    parser.add_argument("--pairs-per-prompt", type=int, default=3)
    parser.add_argument("--heldout-prompts", type=int, default=10)
    parser.add_argument("--budget", type=int, default=60, help="judgments per run")
    parser.add_argument("--step", type=int, default=12, help="judgments between trainings")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=ROOT / "var" / "bench-active")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "random" not in args.strategies:
        args.strategies.insert(0, "random")
    out: Path = args.out.resolve()
    setup_django(out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results: dict[str, dict[int, list[tuple[int, float]]]] = {s: {} for s in args.strategies}
    started = time.perf_counter()
    for seed in args.seeds:
        pool = make_pool(args.pool_prompts, args.pairs_per_prompt, seed, "pool")
        heldout = make_pool(args.heldout_prompts, args.pairs_per_prompt, seed, "heldout")
        for strategy in args.strategies:
            began = time.perf_counter()
            results[strategy][seed] = run_one(strategy, seed, pool, heldout, args)
            final = results[strategy][seed][-1][1]
            took = time.perf_counter() - began
            print(
                f"seed {seed} {strategy:>12}: final accuracy {final:.3f} ({took:.0f} s)", flush=True
            )
            (out / "runs.json").write_text(json.dumps(results, indent=1))
    summary = summarise(results)
    summary["settings"] = {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
    } | {"annotators": ANNOTATORS, "noise": NOISE, "overlap": OVERLAP}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    steps = [int(r["judgments"]) for r in summary["table"]["random"]]
    print("\nheld-out reward accuracy, mean ± sd over seeds", args.seeds)
    print(f"{'judgments':>12} " + " ".join(f"{s:>10}" for s in steps))
    for strategy, rows in summary["table"].items():
        cells = " ".join(f"{r['mean']:.3f}±{r['sd']:.2f}"[:10].rjust(10) for r in rows)
        print(f"{strategy:>12} {cells}")
    print(f"\nrandom's final mean accuracy: {summary['random_final']:.3f}")
    for strategy, spent in summary["judgments_to_random_final"].items():
        where = "not within the budget" if spent is None else f"{spent} judgments"
        print(f"{strategy:>12} reaches it after {where}")
    (out / "results.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    plot(summary, out / "bench-active.svg")
    print(
        f"\n{summary['seconds']} s; plot {out / 'bench-active.svg'}, numbers {out / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
