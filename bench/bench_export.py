"""Export benchmark: N judgments in a SQLite file of its own, then each format exported in a
fresh process, reporting wall time and that process's peak RSS.

    .venv/bin/python bench/bench_export.py                # 1,000,000 judgments
    .venv/bin/python bench/bench_export.py --judgments 20000

The data set (4 votes per pair, one prompt per pair) is kept under var/bench/ and reused
when a later run asks for the same size. "trl (whole list)" is the alternative the
streaming exporters are measured against: every row built in memory, then written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
VOTES_PER_PAIR = 4
ANNOTATORS = 8
BATCH = 5000
FORMATS = ["trl", "trl-plain", "parquet", "csv", "judgments", "trl:zip", "trl (whole list)"]


def setup_django(db: Path) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "annotate.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(db: Path, judgments: int) -> None:
    """Create the project, users, prompts, completions, comparisons and judgments in bulk."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from annotate.models import Comparison, Completion, Judgment, Project, Prompt, messages_hash

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous=OFF")
    rng = random.Random(0)
    words = ["the", "a", "model", "answer", "prompt", "reply", "better", "worse", "clear", "short"]

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    User = get_user_model()
    users = [User.objects.create(username=f"bench{i}") for i in range(ANNOTATORS)]
    project = Project.objects.create(
        name="Bench", instructions="Pick the better reply.", license="MIT"
    )
    pairs = judgments // VOTES_PER_PAIR
    started = time.monotonic()
    for start in range(0, pairs, BATCH):
        n = min(BATCH, pairs - start)
        with transaction.atomic():
            prompts = []
            for i in range(start, start + n):
                messages = [{"role": "user", "content": f"{i}: {text(40)}"}]
                prompts.append(
                    Prompt(project=project, messages=messages, content_hash=messages_hash(messages))
                )
            Prompt.objects.bulk_create(prompts)
            completions = [
                Completion(
                    prompt=p,
                    text=text(60),
                    model_version_id=1 + side,
                    generation_params={"temperature": 0.7},
                )
                for p in prompts
                for side in (0, 1)
            ]
            Completion.objects.bulk_create(completions)
            comparisons = [
                Comparison(
                    project=project,
                    prompt=p,
                    completion_a=completions[2 * k],
                    completion_b=completions[2 * k + 1],
                    round=1 + (start + k) % 3,
                    judgment_count=VOTES_PER_PAIR,
                )
                for k, p in enumerate(prompts)
            ]
            Comparison.objects.bulk_create(comparisons)
            rows = []
            for c in comparisons:
                for user in rng.sample(users, VOTES_PER_PAIR):
                    rows.append(
                        Judgment(
                            comparison=c,
                            project=project,
                            annotator=user,
                            choice=rng.choices(["a", "b", "tie", "both_bad"], [5, 4, 1, 1])[0],
                            left_is_a=rng.random() < 0.5,
                            duration_ms=rng.randint(2000, 60000),
                        )
                    )
            Judgment.objects.bulk_create(rows)
        done = start + n
        if done % (BATCH * 20) == 0 or done == pairs:
            rate = done * VOTES_PER_PAIR / (time.monotonic() - started)
            print(f"  {done * VOTES_PER_PAIR:>9} judgments ({rate:,.0f}/s)", flush=True)


def child(db: Path, variant: str, out: Path) -> None:
    setup_django(db)
    from annotate.datasets.exporters import export_rows, write_export
    from annotate.datasets.labels import PairOptions
    from annotate.models import Project

    project = Project.objects.get(name="Bench")
    baseline = peak_rss_mb()
    started = time.monotonic()
    if variant == "trl (whole list)":
        rows = list(export_rows(project, "trl", PairOptions()))
        with out.open("w", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        count = len(rows)
    else:
        fmt, _, bundle = variant.partition(":")
        count = write_export(project, fmt, PairOptions(), out, bundle=bundle or "file").rows
    seconds = time.monotonic() - started
    result = {
        "rows": count,
        "seconds": seconds,
        "peak_mb": peak_rss_mb(),
        "baseline_mb": baseline,
        "bytes": out.stat().st_size,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument("--rebuild", action="store_true", help="recreate the data set")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.db), args.child, Path(args.out))
        return

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    db = BENCH_DIR / f"export-{args.judgments}.sqlite3"
    if args.rebuild or not db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        print(f"Creating {args.judgments:,} judgments in {db} ...", flush=True)
        started = time.monotonic()
        setup_django(db)
        build(db, args.judgments)
        print(f"Created in {time.monotonic() - started:.0f} s.", flush=True)
    else:
        print(f"Reusing {db}.", flush=True)

    header = (
        f"{'format':<18} {'rows':>9} {'time s':>8} {'rows/s':>10} {'peak RSS MB':>12} "
        f"{'RSS before MB':>14} {'output MB':>10}"
    )
    results = []
    for variant in [v.strip() for v in args.formats.split(",") if v.strip()]:
        suffix = {"parquet": "parquet", "csv": "csv"}.get(variant, "jsonl")
        if variant.endswith(":zip"):
            suffix = "zip"
        out = BENCH_DIR / f"out-{variant.replace(' ', '_').replace(':', '-')}.{suffix}"
        proc = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--db", str(db), "--out", str(out)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append((variant, result))
        out.unlink(missing_ok=True)
        print(f"  {variant}: {result['seconds']:.1f} s", flush=True)

    print()
    print(
        f"Export benchmark: {args.judgments:,} judgments "
        f"({args.judgments // VOTES_PER_PAIR:,} pairs, {VOTES_PER_PAIR} votes each), "
        "SQLite, one process per format"
    )
    print(header)
    print("-" * len(header))
    for variant, r in results:
        rate = r["rows"] / r["seconds"] if r["seconds"] else 0.0
        print(
            f"{variant:<18} {r['rows']:>9} {r['seconds']:>8.1f} {rate:>10,.0f} "
            f"{r['peak_mb']:>12.0f} {r['baseline_mb']:>14.0f} {r['bytes'] / 1e6:>10.1f}"
        )


if __name__ == "__main__":
    main()
