"""The promotion gate on the tiny model: a simulated judge on the dev prompts tells a version
trained on correct labels from one trained on flipped labels; the human gate waits for people;
auto-rollback restores the parent that people prefer."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from annotate import services as annotate_services
from annotate.models import Comparison, Membership, Project, Prompt
from tests.conftest import api_for
from tests.factories import MembershipFactory, UserFactory
from training import services
from training.core.stats import WinRate
from training.loop_settings import LoopSettings, json_schema, validate_loop_settings
from training.models import ModelVersion, ProjectLoop, Round, TrainingRun
from training.services.gate import decide, gate_mode_of
from training.services.simulation import resolve_rule

from .conftest import TINY_LOOP, VOCAB, judge_round, make_loop_project

# The judge the tiny model can learn in one round: a reply scores 1 when its first word is in
# the first half of the model's vocabulary. About 58% of the random model's 4-token replies
# start so, which leaves room both ways, and the first token's distribution is what a few
# full-weight DPO steps on two dozen pairs move most (a `contains:<word>` rule scores ~14% on
# this model and gives half a dozen decisive pairs, too few to move it measurably).
JUDGE = r"regex:^\s*(" + "|".join(VOCAB[:22]) + r")\b"
_judge = resolve_rule(JUDGE)


def flipped(messages: list[dict[str, Any]], a: str, b: str) -> str:
    """The judge's verdict reversed: labels that make a version worse by construction."""
    return {"a": "b", "b": "a", "tie": "tie"}[_judge(messages, a, b)]


# A round that moves the tiny model: 24 prompts x 4 samples paired best against worst, all
# weights trained for 20 epochs at a high learning rate.
LEARNING_ROUND = {
    "prompts_per_round": 24,
    "k": 4,
    "pairs_per_prompt": 2,
    "pairing": "best_vs_worst",
    "max_new_tokens": 4,
    "eval_share": 0.0,
    "gate_mode": "auto",
    "gate_samples": 4,
    "auto_next_round": False,
    "dpo": {
        **TINY_LOOP["dpo"],
        "lora": False,
        "learning_rate": 1e-2,
        "epochs": 20,
        "batch_size": 8,
        "beta": 0.1,
        "warmup_ratio": 0.0,
        "heldout_fraction": 0.0,
    },
}
N_DEV = 16


def _project(model_dir: Path, n_train: int = 24, n_dev: int = N_DEV, **loop: Any) -> Project:
    """A tiny-model project with ``n_train`` train, ``n_dev`` dev and 2 eval prompts."""
    project = make_loop_project(model_dir, n_prompts=n_train + n_dev, n_eval=2, **loop)
    train = Prompt.objects.filter(project=project, split=Prompt.Split.TRAIN).order_by("pk")
    dev = [p.pk for p in train][n_train:]
    Prompt.objects.filter(pk__in=dev).update(split=Prompt.Split.DEV)
    return project


def _run_rounds(project: Project, rule: str) -> Round:
    call_command(
        "run_rounds",
        project.slug,
        rounds=1,
        simulate=rule,
        annotators=1,
        noise=0.0,
        eval_prompts=2,
        stdout=io.StringIO(),
    )
    return Round.objects.get(project=project, number=1)


# --- The criterion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "low", "high", "passed"),
    [
        (0.68, 0.60, 0.76, True),  # better, clearly
        (0.50, 0.50, 0.50, True),  # the same texts: nothing against it
        (0.53, 0.41, 0.65, True),  # no worse, within the margin
        (0.47, 0.44, 0.50, False),  # judged worse, even if not significantly
        (0.60, 0.30, 0.90, False),  # too few prompts to rule out "worse by 0.1"
    ],
)
def test_the_criterion_needs_the_rate_and_a_lower_end_within_the_margin(
    rate: float, low: float, high: float, passed: bool
) -> None:
    ok, reason = decide(WinRate(rate, low, high, 16, 64), LoopSettings())
    assert ok is passed
    assert f"{rate:.2f} [{low:.2f}, {high:.2f}]" in reason


def test_a_stricter_project_asks_for_a_significant_gain() -> None:
    strict = LoopSettings(gate_min_win_rate=0.55, gate_margin=0.05)
    assert decide(WinRate(0.68, 0.60, 0.76, 16, 64), strict)[0]
    assert not decide(WinRate(0.58, 0.45, 0.70, 16, 64), strict)[0]


def test_auto_uses_a_known_judge_on_enough_dev_prompts_else_the_heldout_checks() -> None:
    prompts = [Prompt(pk=i) for i in range(5)]
    assert gate_mode_of(LoopSettings(gate_judge="shorter"), prompts) == "simulated"
    assert gate_mode_of(LoopSettings(gate_judge="shorter"), prompts[:4]) == "heldout"
    assert gate_mode_of(LoopSettings(), prompts) == "heldout"
    assert gate_mode_of(LoopSettings(gate_mode="human"), []) == "human"


# --- The simulated gate on the tiny model ----------------------------------------------------


def test_it_promotes_a_version_trained_on_correct_labels(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = _project(tiny_model_dir, **LEARNING_ROUND)
    # gate_mode "auto" without gate_judge: run_rounds lends its rule to the gate
    loop_round = _run_rounds(project, JUDGE)
    assert loop_round.settings["gate_judge"] == JUDGE
    version = ModelVersion.objects.get(trained_in=loop_round)
    gate = version.gate
    assert gate["mode"] == "simulated", gate
    assert (gate["judge"], gate["opponent"]) == (JUDGE, "base")
    assert (gate["prompts"], gate["comparisons"]) == (N_DEV, N_DEV * 4)
    assert gate["decision"] == "promoted" and gate["passed"] is True, gate
    low, high = gate["ci95"]
    assert gate["win_rate"] > 0.6 and 0.5 < low <= gate["win_rate"] <= high
    assert loop_round.state == Round.State.PROMOTED
    assert services.serving_version(project) == version


def test_it_rejects_a_version_trained_on_flipped_labels(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = _project(
        tiny_model_dir, **{**LEARNING_ROUND, "gate_mode": "simulated", "gate_judge": JUDGE}
    )
    loop_round = _run_rounds(project, f"{__name__}.flipped")
    assert loop_round.settings["gate_judge"] == JUDGE  # the project's judge, not the annotators'
    version = ModelVersion.objects.get(trained_in=loop_round)
    gate = version.gate
    assert gate["decision"] == "rejected" and gate["passed"] is False, gate
    low, high = gate["ci95"]
    # How far the flipped round falls differs between databases with the same seeds (0.23 on
    # SQLite, 0.48 on PostgreSQL); either way it is below the required rate, and rejected.
    assert low <= gate["win_rate"] < 0.5 and low < 0.5
    assert loop_round.state == Round.State.REJECTED
    assert "below the required 0.50" in loop_round.error
    assert version.state == ModelVersion.State.REJECTED
    assert services.serving_version(project).number == 0


def test_a_simulated_gate_without_a_judge_rejects_and_says_what_to_set(
    db: Any, tiny_model_dir: Path, var_dir: Path
) -> None:
    project = _project(tiny_model_dir, n_train=8, n_dev=5, gate_mode="simulated")
    loop_round = _round_to_gate(project)
    assert loop_round.state == Round.State.REJECTED
    assert "gate_mode simulated needs a judge: set gate_judge" in loop_round.error


# --- The human gate --------------------------------------------------------------------------


def _round_to_gate(project: Project) -> Round:
    """Sample, judge by a rule, train and gate round 1 in this process."""
    with services.in_process():
        run = judge_round(project)
        loop_round = run.round
        services.train_round(run.pk)
    return Round.objects.get(pk=loop_round.pk)


def _person(project: Project, name: str) -> Any:
    user = UserFactory(username=name)
    MembershipFactory(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


def _judge_as(user: Any, project: Project, prefer: int, kind: str, limit: int) -> int:
    """Judge up to ``limit`` of the project's ``kind`` comparisons through the queue as
    ``user``, preferring the completion of version ``prefer``; skip the others."""
    judged = 0
    while judged < limit:
        assignment = annotate_services.next_assignment(project, user)
        if assignment is None:
            break
        comparison = assignment.comparison
        if comparison.kind != kind:
            annotate_services.skip(project, user, comparison.pk)
            continue
        a_wins = comparison.completion_a.model_version_id == prefer
        choice = "left" if a_wins == assignment.left_is_a else "right"
        data = annotate_services.JudgmentInput(choice=choice, client_id=uuid.uuid4())
        annotate_services.submit_judgment(user, comparison.pk, data)
        judged += 1
    return judged


@pytest.mark.parametrize("people_prefer", ["candidate", "serving"])
def test_the_human_gate_holds_promotion_until_people_have_judged(
    db: Any,
    tiny_model_dir: Path,
    var_dir: Path,
    people_prefer: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    project = _project(
        tiny_model_dir,
        n_train=24,
        n_dev=5,
        # no simulated judge here, so random pairs; the annotators' rule is "shorter"
        **{**LEARNING_ROUND, "pairing": "random", "gate_mode": "human"},
        human_gate_comparisons=10,
    )
    loop_round = _round_to_gate(project)
    version = ModelVersion.objects.get(trained_in=loop_round)
    gate = version.gate
    assert loop_round.state == Round.State.EVALUATING
    assert version.state == ModelVersion.State.CANDIDATE
    assert services.serving_version(project).number == 0
    assert gate["mode"] == "human" and gate["decision"] == "waiting" and gate["judged"] == 0
    comparisons = Comparison.objects.filter(round=1, kind=Comparison.Kind.EVAL)
    needed = gate["needed"]
    identical = sum(gate["identical"].values())
    # 10 slots over 5 dev prompts, 2 samples each; a slot with equal texts is a tie unasked
    assert needed == comparisons.count() >= 5 and needed + identical == 10
    for comparison in comparisons:
        assert comparison.prompt.split == Prompt.Split.DEV
        assert comparison.completion_a.model_version_id == version.pk
        assert comparison.completion_b.model_version_id == services.base_version(project).pk

    prefer = version.pk if people_prefer == "candidate" else services.base_version(project).pk
    alice = _person(project, "alice")
    assert _judge_as(alice, project, prefer, Comparison.Kind.EVAL, needed - 1) == needed - 1
    assert services.check_triggers() == 0  # the beat re-checks: one comparison is left
    version.refresh_from_db()
    assert version.gate["decision"] == "waiting" and version.gate["judged"] == needed - 1
    assert Round.objects.get(pk=loop_round.pk).state == Round.State.EVALUATING
    lead = Client()
    lead.force_login(project.memberships.get(role=Membership.Role.LEAD).user)
    page = lead.get(f"/projects/{project.pk}/loop/").content.decode()
    assert f"the human gate: {needed - 1} / {needed} comparisons of v1 against base" in page

    # the last judgment decides, through the judgment_recorded receiver
    with django_capture_on_commit_callbacks(execute=True):
        assert _judge_as(alice, project, prefer, Comparison.Kind.EVAL, 1) == 1
    version.refresh_from_db()
    loop_round.refresh_from_db()
    gate = version.gate
    wins = needed if people_prefer == "candidate" else 0
    assert gate["win_rate"] == pytest.approx((wins + 0.5 * identical) / 10, abs=1e-4)
    assert gate["judged"] == needed and gate["comparisons"] == 10
    if people_prefer == "candidate":
        assert gate["decision"] == "promoted" and loop_round.state == Round.State.PROMOTED
        assert services.serving_version(project) == version
    else:
        assert gate["decision"] == "rejected" and loop_round.state == Round.State.REJECTED
        assert version.state == ModelVersion.State.REJECTED
        assert services.serving_version(project).number == 0


# --- Auto-rollback ---------------------------------------------------------------------------


@pytest.mark.parametrize("people_prefer", ["parent", "new version"])
def test_auto_rollback_restores_the_parent_that_people_prefer(
    db: Any, tiny_model_dir: Path, var_dir: Path, people_prefer: str
) -> None:
    # round 2 pits v1 against its parent (the base) on all 6 eval prompts
    project = make_loop_project(
        tiny_model_dir, n_eval=6, auto_rollback=True, eval_share=0.6, auto_next_round=False
    )
    first = _round_to_gate(project)
    v1 = ModelVersion.objects.get(trained_in=first)
    assert v1.state == ModelVersion.State.SERVING
    with services.in_process():
        second = services.start_round(project)
        services.generate_round(second.pk)
    base = services.base_version(project)
    prefer = base.pk if people_prefer == "parent" else v1.pk
    assert _judge_as(_person(project, "alice"), project, prefer, Comparison.Kind.EVAL, 99) == 6
    with services.in_process():
        services.simulate_annotators(project, "shorter", annotators=1, noise=0.0, round_number=2)
        started = services.check_trigger(second.pk)
    second.refresh_from_db()
    v1.refresh_from_db()
    check = v1.gate["rollback"]
    assert (check["round"], check["opponent"], check["prompts"]) == (2, "base", 6)
    if people_prefer == "parent":
        assert not started and check["rolled_back"] is True
        assert check["win_rate"] == 0.0 and check["ci95"] == [0.0, 0.0]
        assert services.serving_version(project) == base
        assert v1.state == ModelVersion.State.REJECTED
        assert second.state == Round.State.REJECTED
        assert "v1 rolled back to base" in second.error
        assert not TrainingRun.objects.filter(round=second).exists()
    else:
        assert started and check["rolled_back"] is False and check["win_rate"] == 1.0
        assert services.serving_version(project) == v1
        assert second.state == Round.State.TRAINING


# --- Settings, storage, page and API ---------------------------------------------------------


def test_the_gate_settings_validate_naming_the_field() -> None:
    assert LoopSettings().gate_mode == "auto" and LoopSettings().auto_rollback is False
    for data, message in [
        ({"gate_mode": "sometimes"}, "gate_mode: must be one of auto, simulated, human, off"),
        ({"gate_min_win_rate": 1.5}, "gate_min_win_rate: must lie between 0 and 1"),
        ({"gate_margin": -0.1}, "gate_margin: must lie between 0 and 1"),
        ({"human_gate_comparisons": 0}, "human_gate_comparisons: must be at least 1"),
        ({"gate_samples": 0}, "gate_samples: must be at least 1"),
        ({"gate_judge": 3}, "gate_judge: expected str"),
        ({"gate": False}, "unknown loop setting(s): gate"),
    ]:
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate_loop_settings(data)
    schema = json_schema()["properties"]
    assert schema["gate_mode"]["enum"] == ["auto", "simulated", "human", "off"]
    assert schema["gate_margin"] == {
        "type": "number",
        "default": 0.1,
        "minimum": 0.0,
        "maximum": 1.0,
    }
    assert schema["human_gate_comparisons"]["minimum"] == 1


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_the_gate_switch_into_gate_mode() -> None:
    executor = MigrationExecutor(connection)
    before = [("training", "0005_drop_eval_holdout"), ("annotate", "0005_prompt_split_dev")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    loop_model = old.get_model("training", "ProjectLoop")
    project_model = old.get_model("annotate", "Project")
    off = project_model.objects.create(name="Off", slug="off", export_salt="s")
    on = project_model.objects.create(name="On", slug="on", export_salt="t")
    loop_model.objects.create(project_id=off.pk, settings={"k": 3, "gate": False})
    loop_model.objects.create(project_id=on.pk, settings={"gate": True})

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert ProjectLoop.objects.get(project_id=off.pk).settings == {"k": 3, "gate_mode": "off"}
    assert ProjectLoop.objects.get(project_id=on.pk).settings == {}


def test_the_page_and_the_api_show_the_gate_with_its_interval(loop_project: Project) -> None:
    base = services.base_version(loop_project)
    ModelVersion.objects.create(
        project=loop_project,
        number=1,
        spec="unused",
        parent=base,
        state=ModelVersion.State.REJECTED,
        gate={
            "mode": "simulated",
            "judge": "contains:please",
            "opponent": "base",
            "win_rate": 0.31,
            "ci95": [0.22, 0.4],
            "prompts": 30,
            "comparisons": 120,
            "passed": False,
            "decision": "rejected",
            "reasons": ["win rate 0.31 [0.22, 0.40] is below the required 0.50"],
        },
    )
    lead = loop_project.memberships.get(role=Membership.Role.LEAD).user
    client = Client()
    client.force_login(lead)
    body = client.get(f"/projects/{loop_project.pk}/loop/").content.decode()
    assert "rejected by the simulated gate" in body
    assert "win rate 0.31 [0.22, 0.40] over base" in body and "contains:please" in body

    rows = api_for(lead).get(f"/api/projects/{loop_project.pk}/versions/").json()
    gate = rows[1]["gate"]
    assert gate["decision"] == "rejected" and gate["mode"] == "simulated"
    assert (gate["win_rate"], gate["ci95"], gate["prompts"]) == (0.31, [0.22, 0.4], 30)
