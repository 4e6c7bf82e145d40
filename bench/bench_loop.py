"""Online against offline DPO at the same judgment budget, on the demo model.

    make bench-loop                      # demo model, 3 online rounds and offline, seeds 0 1 2
    .venv/bin/python bench/bench_loop.py --model tiny --prompts 16 --rounds 2 --seeds 0

Per seed, a project of its own gets the demo prompts and the settings a new project on the demo
model gets by default; the benchmark sets only the rounds, 3 simulated annotators judging
every comparison (overlap 3) with 10% noise, and the seed (``run_rounds --seed``). The judge is
``contains:<word>``. First the base's success rate (the share of its samples on the eval split
that contain the word) is measured and printed: the word is meant to sit at 5-20%, so that
there is room to learn. Then ``run_rounds --rounds 1`` runs each online round, and
``run_rounds --offline`` spends the same judgments on base samples in one run with the same
optimizer steps. After each round and for the offline version, ``manage.py evaluate``'s
service measures the version on the eval split: win rate over the base with its 95%
prompt-clustered interval, length-controlled win rate, KL to the base, truncated share.

On a 2-core CPU the demo run takes hours, so it is not part of CI (the tiny smoke run is). Each
seed writes ``<out>/seed-<S>.json`` after every step; running again skips finished seeds and
rounds, and a round that was stopped half-way is discarded and run again (it is seeded, so it
comes out the same).

``--settings JSON`` lays loop settings over those defaults (as the API takes them, ``dpo``
merged key by key) to try other round sizes, pairing or learning rates; the record keeps them,
and a seed's project made with other settings is refused rather than reused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEMO_PROMPTS = ROOT / "annotate" / "demo" / "prompts.jsonl"
# Words an assistant's answer may or may not use. Unless --word names one, the demo run's judge
# is contains:<w> for the candidate whose base success rate on the first seed's eval split is
# closest to TARGET_RATE: common enough that a round's pairs hold examples of it, rare enough
# that there is room to learn (5-20%, see the issue's target). The choice is kept in
# <out>/word.json so that every seed and every resumed run uses the same word.
CANDIDATE_WORDS = (
    "example", "important", "simple", "however", "also", "help", "first", "best", "step",
    "because", "different", "need", "often", "sure", "great", "usually", "specific", "common",
    "quick", "easy",
)  # fmt: skip
TARGET_RATE = 0.10
# Settings of the tiny smoke run only: a round takes seconds. The demo run uses no overrides.
TINY_SETTINGS: dict[str, Any] = {
    "prompts_per_round": 8,
    # four samples and three pairs a prompt, so that a round of a rare-word rule still has
    # decisive pairs (with two samples and one pair, a round often had none)
    "k": 4,
    "pairs_per_prompt": 3,
    "max_new_tokens": 6,
    "temperature": 1.0,
    "top_p": 1.0,
    "gate_mode": "off",
    "dpo": {
        "batch_size": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"],
        "max_length": 64,
        "max_prompt_length": 32,
    },
}
# The tiny model's whole vocabulary (prompt words outside it read as unknown), and its judge's
# candidate words: with so few words a round of the random model always has pairs to learn.
TINY_WORDS = "yes no maybe the a is of and to it one two three good bad ok".split()  # noqa: SIM905
ANNOTATORS = 3
NOISE = 0.1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo", help='"demo", "tiny" or a model directory')
    parser.add_argument(
        "--word", default=None, help="the judge is contains:<word> (default: chosen, see above)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--prompts", type=int, default=None, help="the first N demo prompts")
    parser.add_argument("--samples", type=int, default=4, help="eval samples per prompt")
    parser.add_argument("--out", type=Path, default=None, help="default var/bench-loop/<model>")
    parser.add_argument(
        "--settings",
        default=None,
        metavar="JSON",
        help="loop settings over the defaults, as the API takes them (an experiment: the result "
        "no longer measures the defaults)",
    )
    parser.add_argument(
        "--measure-words",
        default=None,
        metavar="W1,W2",
        help="only print each word's base success rate on the first seed's eval split",
    )
    args = parser.parse_args(argv)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.loop_settings = _loop_settings(parser, args)
    tag = args.model if args.model in ("demo", "tiny") else Path(args.model).name
    args.tag = tag
    args.out = (args.out or ROOT / "var" / "bench-loop" / tag).resolve()
    return args


def _loop_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The loop settings the seed projects get: the model's (none for the demo: a new project's
    defaults), then --settings over them, ``dpo`` merged key by key (validated in ``main``)."""
    base = dict(TINY_SETTINGS) if args.model == "tiny" else {}
    if args.settings is None:
        return base
    try:
        overrides = json.loads(args.settings)
    except ValueError as exc:
        parser.error(f"--settings: not JSON: {exc}")
    if not isinstance(overrides, dict):
        parser.error("--settings: must be a JSON object")
    merged = {**base, **overrides}
    if isinstance(overrides.get("dpo"), dict):
        merged["dpo"] = {**base.get("dpo", {}), **overrides["dpo"]}
    return merged


def setup_django(out: Path) -> None:
    """Run against a database and model directory of the benchmark's own, unless Django is
    set up already (a test calling ``main``)."""
    from django.apps import apps

    if apps.ready:
        return
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")
    os.environ.setdefault("PREFLOOP_VAR_DIR", str(out / "var"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{out / 'bench.sqlite3'}")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def demo_prompt_rows(limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def tiny_model(out: Path) -> Path:
    """A random-weight tiny model with a word vocabulary of its own."""
    from training.core.tiny import save_tiny, tiny_llama, word_tokenizer

    directory = out / "tiny-model"
    if not (directory / "config.json").exists():
        tokenizer = word_tokenizer(TINY_WORDS)
        save_tiny(tiny_llama(tokenizer), tokenizer, directory)
    return directory


def model_spec(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    if args.model == "tiny":
        return str(tiny_model(args.out))
    return args.model


def seed_project(args: argparse.Namespace, seed: int, spec: str, rows: list[dict[str, Any]]) -> Any:
    """The seed's project, created with the prompts the first time."""
    from django.db import transaction

    from annotate.datasets.imports import import_records
    from annotate.models import Project
    from training.models import ProjectLoop
    from training.services.offline import seeded_settings
    from training.services.splits import ensure_splits

    slug = f"bench-loop-{args.tag}-s{seed}"
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        with transaction.atomic():
            project = Project.objects.create(
                name=f"bench-loop {args.tag} seed {seed}", slug=slug, overlap=ANNOTATORS
            )
            ProjectLoop.store(project, base_model=spec, settings=args.loop_settings)
            import_records(project, "prompts", rows)
    # compared with the seed that `run_rounds --seed` stores in them once the seed has run
    elif seeded_settings(ProjectLoop.of(project).settings, seed) != seeded_settings(
        args.loop_settings, seed
    ):
        raise SystemExit(
            f"{slug} in {args.out} was made with other loop settings than these: "
            "give another --out (or the same --settings as before)"
        )
    ensure_splits(project)
    return project


# --- One seed's record ------------------------------------------------------------------


def load_record(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def save_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


_BASE_TEXTS: dict[tuple[int, int], list[str]] = {}


def base_texts(project: Any, samples: int) -> list[str]:
    """``samples`` base samples per eval prompt (sampled once per project in this process)."""
    from training.loop_settings import loop_settings
    from training.services import base_version
    from training.services.evaluation import SampleCache, eval_prompts

    key = (project.pk, samples)
    if key not in _BASE_TEXTS:
        prompts = eval_prompts(project, 10**6)
        cache = SampleCache(samples)
        texts = cache.texts(base_version(project), prompts, loop_settings(project))
        _BASE_TEXTS[key] = [t for row in texts for t in row]
    return _BASE_TEXTS[key]


def success_rate(texts: list[str], word: str) -> float:
    """Share of ``texts`` that ``contains:<word>`` scores 1 (that beat an empty text)."""
    from training.services.simulation import contains

    rule = contains(word)
    return sum(rule([], t, "") == "a" for t in texts) / len(texts) if texts else float("nan")


def choose_word(args: argparse.Namespace, spec: str, rows: list[dict[str, Any]]) -> str:
    """The judge's word: --word, else the one chosen before, else the candidate whose base rate
    on the first seed's eval split is closest to TARGET_RATE."""
    if args.word:
        return str(args.word)
    path = args.out / "word.json"
    if path.exists():
        return str(json.loads(path.read_text())["word"])
    project = seed_project(args, args.seed_list[0], spec, rows)
    texts = base_texts(project, args.samples)
    candidates = TINY_WORDS if args.model == "tiny" else CANDIDATE_WORDS
    rates = {word: success_rate(texts, word) for word in candidates}
    word = min(rates, key=lambda w: (abs(rates[w] - TARGET_RATE), w))
    print(
        "base success rates on the eval split: "
        + ", ".join(f"{w} {r:.1%}" for w, r in sorted(rates.items(), key=lambda x: -x[1]))
    )
    print(f"judge word: {word} ({rates[word]:.1%} of {len(texts)} base samples)")
    save_record(path, {"word": word, "rates": rates, "samples": len(texts)})
    return word


def discard_unfinished(project: Any) -> list[int]:
    """Remove rounds a stopped run left open or failed, with their rows and version files."""
    from annotate.models import Comparison, Completion
    from training.models import ModelVersion, Round
    from training.services import models_dir

    discarded = []
    for loop_round in Round.objects.filter(project=project).exclude(
        state__in=Round.FINISHED_STATES
    ):
        comparisons = Comparison.objects.filter(project=project, round=loop_round.number)
        completion_ids = set(comparisons.values_list("completion_a_id", flat=True))
        completion_ids |= set(comparisons.values_list("completion_b_id", flat=True))
        comparisons.delete()
        Completion.objects.filter(pk__in=completion_ids).delete()
        numbers = [run.version_number for run in loop_round.runs.all()]
        ModelVersion.objects.filter(trained_in=loop_round).delete()
        loop_round.delete()
        for number in numbers:
            shutil.rmtree(models_dir(project) / f"v{number}", ignore_errors=True)
        discarded.append(loop_round.number)
    return discarded


def train_judgments(project: Any, numbers: list[int]) -> int:
    from annotate.models import Comparison, Judgment

    return Judgment.objects.filter(
        comparison__project=project,
        comparison__round__in=numbers,
        comparison__kind=Comparison.Kind.TRAIN,
    ).count()


def measure(project: Any, loop_round: Any, judge: str, args: argparse.Namespace, seed: int) -> dict:
    """The round's version on the eval split, with what it cost."""
    from training.models import ModelVersion, TrainingRun
    from training.services.evaluation import eval_cache_dir, evaluate_versions

    version = ModelVersion.objects.get(trained_in=loop_round)
    run = TrainingRun.objects.get(round=loop_round, state=TrainingRun.State.SUCCEEDED)
    started = time.perf_counter()
    report = evaluate_versions(
        project,
        judge,
        versions=[version.label],
        samples=args.samples,
        seed=seed,
        cache_dir=eval_cache_dir(project),
    )
    numbers = report.to_dict()["versions"][-1]
    wall = (loop_round.finished_at - loop_round.created_at).total_seconds()
    return {
        "round": loop_round.number,
        "version": version.label,
        "state": version.state,
        "parent": version.parent.label if version.parent else None,
        "win_rate_over_base": numbers["win_rate_over_base"],
        "ci95": numbers["ci95"],
        "length_controlled_win_rate": numbers["length_controlled_win_rate"],
        "kl_to_base": numbers["kl_to_base"],
        "mean_tokens": numbers["mean_tokens"],
        "truncated_share": numbers["truncated_share"],
        "pairs": run.num_pairs,
        "steps": run.step,
        "epochs": run.config.get("epochs"),
        "round_wall_s": round(wall, 1),
        "eval_wall_s": round(time.perf_counter() - started, 1),
        "eval_prompts": report.eval_prompts,
    }


def run_command(project: Any, judge: str, seed: int, *extra: str) -> str:
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command(
        "run_rounds",
        project.slug,
        "--simulate", judge,
        "--seed", str(seed),
        "--annotators", str(ANNOTATORS),
        "--noise", str(NOISE),
        "--eval-prompts", "0",
        *extra,
        stdout=out,
    )  # fmt: skip
    return out.getvalue()


def run_seed(args: argparse.Namespace, seed: int, spec: str, rows: list[dict[str, Any]]) -> dict:
    """One seed, from where its record stopped; returns the finished record."""
    from training.models import Round

    path = args.out / f"seed-{seed}.json"
    judge = f"contains:{args.word}"
    record = load_record(path)
    if record is not None and record.get("done"):
        print(f"seed {seed}: finished before, skipped")
        return record
    project = seed_project(args, seed, spec, rows)
    if record is None:
        record = {
            "seed": seed,
            "model": args.model,
            "judge": judge,
            "rounds": args.rounds,
            "annotators": ANNOTATORS,
            "noise": NOISE,
            "settings": args.loop_settings,
            "online": [],
            "offline": None,
            "done": False,
        }
    discarded = discard_unfinished(project)
    if discarded:
        print(f"seed {seed}: discarded the unfinished round(s) {discarded}, running them again")
    if "base_success_rate" not in record:
        texts = base_texts(project, args.samples)
        record["base_success_rate"] = round(success_rate(texts, args.word), 4)
        record["base_samples"] = len(texts)
        save_record(path, record)
    rate = record["base_success_rate"]
    note = "" if 0.05 <= rate <= 0.20 else "  (outside 5-20%: choose another --word)"
    print(f"seed {seed}: base success rate of {judge} on the eval split: {rate:.1%}{note}")

    for number in range(1, args.rounds + 1):
        if any(row["round"] == number for row in record["online"]):
            continue
        if not Round.objects.filter(project=project, number=number).exists():
            run_command(project, judge, seed, "--rounds", "1")
        loop_round = Round.objects.get(project=project, number=number)
        row = measure(project, loop_round, judge, args, seed)
        row["judgments"] = train_judgments(project, list(range(1, number + 1)))
        record["online"].append(row)
        save_record(path, record)
        print(f"seed {seed}: online round {number} measured")

    if record["offline"] is None:
        number = args.rounds + 1
        extra = ["--rounds", str(args.rounds), "--offline"]
        if not Round.objects.filter(project=project, number=number).exists():
            run_command(project, judge, seed, *extra)
        loop_round = Round.objects.get(project=project, number=number)
        row = measure(project, loop_round, judge, args, seed)
        row["judgments"] = train_judgments(project, [number])
        record["offline"] = row
    record["done"] = True
    save_record(path, record)
    return record


# --- Tables ---------------------------------------------------------------------------------


def _rows(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    named = [(f"online {row['round']}", row) for row in record["online"]]
    if record.get("offline"):
        named.append(("offline", record["offline"]))
    return named


HEADER = (
    f"{'run':<9} {'version':<8} {'win vs base':>11} {'95% CI':>14} {'LC win':>6} {'KL':>7} "
    f"{'cut off':>7} {'judgments':>9} {'steps':>5} {'wall min':>8}"
)


def _line(name: str, version: str, row: dict[str, Any], low_label: str = "") -> str:
    def num(x: Any, fmt: str) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    ci = row.get("ci95") or [None, None]
    interval = f"[{num(ci[0], '.2f')}, {num(ci[1], '.2f')}]"
    return (
        f"{name:<9} {version:<8} {num(row['win_rate_over_base'], '.2f'):>11} {interval:>14} "
        f"{num(row['length_controlled_win_rate'], '.2f'):>6} {num(row['kl_to_base'], '.3f'):>7} "
        f"{num(row['truncated_share'], '.0%'):>7} {num(row['judgments'], '.0f'):>9} "
        f"{num(row['steps'], '.0f'):>5} {num(row['round_wall_s'] / 60, '.1f'):>8}"
    )


def seed_table(record: dict[str, Any]) -> str:
    lines = [
        f"seed {record['seed']}: {record['judge']}, base success rate "
        f"{record['base_success_rate']:.1%}",
        HEADER,
    ]
    lines += [_line(name, row["version"], row) for name, row in _rows(record)]
    return "\n".join(lines)


def mean_table(records: list[dict[str, Any]]) -> str:
    """Each run averaged over the seeds; the interval column is the mean of the bounds, and the
    lowest lower bound of any seed is printed below it."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        for name, row in _rows(record):
            by_name.setdefault(name, []).append(row)
    lines = [f"mean over {len(records)} seed(s)", HEADER]
    lowest = []
    for name, rows in by_name.items():

        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
            values = [r[key] for r in rows if r.get(key) is not None]
            return statistics.fmean(values) if values else None

        lows = [r["ci95"][0] for r in rows if r.get("ci95") and r["ci95"][0] is not None]
        highs = [r["ci95"][1] for r in rows if r.get("ci95") and r["ci95"][1] is not None]
        averaged = {
            key: mean(key)
            for key in (
                "win_rate_over_base",
                "length_controlled_win_rate",
                "kl_to_base",
                "truncated_share",
                "judgments",
                "steps",
                "round_wall_s",
            )
        }
        averaged["ci95"] = [
            statistics.fmean(lows) if lows else None,
            statistics.fmean(highs) if highs else None,
        ]
        lines.append(_line(name, f"x{len(rows)}", averaged))
        if lows:
            lowest.append(f"{name} {min(lows):.2f}")
    lines.append("lowest lower 95% bound of any seed: " + ", ".join(lowest))
    return "\n".join(lines)


def measure_words(args: argparse.Namespace, spec: str, rows: list[dict[str, Any]]) -> None:
    seed = args.seed_list[0]
    project = seed_project(args, seed, spec, rows)
    texts = base_texts(project, args.samples)
    for word in args.measure_words.split(","):
        rate = success_rate(texts, word.strip())
        print(f"contains:{word.strip()}: {rate:.1%} of {len(texts)} base samples on the eval split")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_django(args.out)
    from django.core.exceptions import ValidationError

    from training.loop_settings import validate_loop_settings

    try:
        validate_loop_settings(args.loop_settings)
    except ValidationError as exc:
        print(f"--settings: {'; '.join(exc.messages)}", file=sys.stderr)
        return 2
    rows = demo_prompt_rows(args.prompts)
    spec = model_spec(args, rows)
    if args.measure_words:
        measure_words(args, spec, rows)
        return 0
    args.word = choose_word(args, spec, rows)
    print(
        f"bench-loop: model {args.model}, contains:{args.word}, {args.rounds} online rounds and "
        f"offline, seeds {args.seed_list}, {ANNOTATORS} annotators, noise {NOISE}, "
        f"results in {args.out}"
    )
    records = []
    for seed in args.seed_list:
        record = run_seed(args, seed, spec, rows)
        print(seed_table(record))
        records.append(record)
    print(mean_table(records))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
