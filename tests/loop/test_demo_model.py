"""Two rounds on the bundled demo model with the `shorter` rule make the policy shorter."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from annotate.models import Prompt
from tests.factories import ProjectFactory

DEMO_PROMPTS = Path(__file__).resolve().parents[2] / "annotate" / "demo" / "prompts.jsonl"
# Small enough for two CPU cores: short completions, a LoRA adapter, a few epochs.
DEMO_LOOP = {
    "prompts_per_round": 24,
    # Four samples give a prompt's pairs a better chance that one reply ends on
    # its own, which is what the "shorter" rule can teach.
    "k": 4,
    "pairs_per_prompt": 2,
    "max_new_tokens": 48,
    "temperature": 0.9,
    "eval_share": 0.0,
    "generation_batch_size": 16,
    "dpo": {
        "epochs": 3,
        "batch_size": 4,
        "lora_learning_rate": 5e-4,
        "max_length": 256,
        "max_prompt_length": 128,
        "heldout_fraction": 0.15,
    },
}


@pytest.mark.slow
@pytest.mark.demo_model
# Two whole rounds of the 135M model on two cores, with the simulated gate sampling the dev
# prompts each round: 15-20 minutes on a busy machine, past the suite's default limit.
@pytest.mark.timeout(2700)
def test_it_makes_the_demo_model_prefer_shorter_answers(db: Any, var_dir: Path) -> None:
    from training.core import resolve_demo_model

    resolve_demo_model()
    project = ProjectFactory(name="Demo loop", base_model="demo", loop_settings=DEMO_LOOP)
    rows = [json.loads(line) for line in DEMO_PROMPTS.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if "prompt" in row]
    for i, row in enumerate(rows[:58]):
        Prompt.objects.create(
            project=project,
            messages=[{"role": "user", "content": row["prompt"]}],
            split=Prompt.Split.EVAL if i >= 48 else Prompt.Split.TRAIN,
        )
    out = io.StringIO()
    call_command(
        "run_rounds",
        project.slug,
        rounds=2,
        simulate="shorter",
        annotators=3,
        noise=0.1,
        eval_prompts=10,
        stdout=out,
    )
    table = out.getvalue()
    print(table)
    rows = [
        line.split()
        for line in table.strip().splitlines()[1:]
        if line.split()[:1] in (["1"], ["2"])
    ]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][2] == "promoted", table
    # Round 2 is promoted, or rejected only by the held-out check that the chosen answers'
    # log-prob did not collapse (a round that learns the rule fast can trip it).
    assert rows[1][2] == "promoted" or "held-out chosen log-prob collapsed" in table, table
    # the last columns: the rule's win rate over the base, its 95% interval and the prompts
    for row in rows:
        win, low, high, n = row[-4:]
        assert float(low.strip("[,")) <= float(win) <= float(high.strip("],")), table
        assert n == "n=10", table
    # the final version prefers shorter answers: its interval lies above even
    assert float(rows[1][-3].strip("[,")) > 0.5, table
