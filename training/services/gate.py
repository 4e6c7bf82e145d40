"""The gate: a round's new version (the candidate) against the serving version; promote it,
reject it, or wait for people; and the roll-back of a promoted version that people find worse.

How a candidate is judged is the round's ``gate_mode`` (see `gate_mode_of`):

- ``simulated``: a rule judge compares the candidate's samples with the serving version's on
  the project's dev prompts (drawn once, never trained on), both sampled with the same seed
  per prompt, so the i-th samples of the two versions meet on equal terms; the paired win rate
  with its prompt-clustered bootstrap interval then decides (`decide`).
- ``human``: the same comparisons go to people as eval comparisons; the round waits in
  "evaluating" until ``human_gate_comparisons`` of them are judged (re-checked after every
  judgment and by the beat, `check_human_gate`), and the people's win rate decides.
- ``heldout``: what ``auto`` falls back to without a judge or dev prompts: the held-out pair
  checks of the training run (`heldout_check`).
- ``off``: every trained version is promoted.

With ``auto_rollback``, a promoted version is rolled back to its parent when the next round's
human eval judgments show it significantly worse (`roll_back_if_worse`).

Every decision, with its numbers and interval, is stored on the version (``ModelVersion.gate``);
a promoted round starts the next one by itself when the project's settings ask for it.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotate.errors import Conflict, InvalidInput
from annotate.models import Comparison, Completion, Judgment, Project, Prompt

from ..core.loading import load_model
from ..core.stats import WinRate, bootstrap_win_rate, outcome, paired_win_rate
from ..loop_settings import LoopSettings
from ..models import ModelVersion, Round
from . import dispatch
from .evaluation import EvalCache, eval_cache_dir, prompt_seed
from .generation import start_round
from .simulation import Sample, resolve_rule
from .splits import ensure_splits
from .versions import promote, serving_version

log = logging.getLogger(__name__)

# The gate samples at most this many dev prompts, the first by id, so every round meets the
# same ones: 100 prompts x 4 samples bound a win rate's 95% interval to about +-0.05 at worst,
# and keep a gate to a few hundred samples per version on a CPU.
DEV_PROMPTS_MAX = 100
# A decision on a bootstrap interval needs at least this many prompts: resampling 4 prompts
# that all went one way gives a point interval, though 4 fair coins land alike 1 time in 8.
MIN_PROMPTS = 5

WAITING = "waiting"
PROMOTED = "promoted"
REJECTED = "rejected"


# --- The criterion ---------------------------------------------------------------------------


def decide(rate: WinRate, ls: LoopSettings) -> tuple[bool, str]:
    """Whether the candidate's win rate over the serving version earns promotion, and why.

    Both must hold:

    1. ``rate >= gate_min_win_rate`` (0.5 by default): the judge prefers the candidate at least
       as often as the serving version. A version worse by construction (trained on flipped
       labels) falls below 0.5 here, however narrow or wide its interval.
    2. ``low >= gate_min_win_rate - gate_margin`` (0.4 by default), where ``low`` is the lower
       end of the rate's 95% prompt-clustered bootstrap interval: a non-inferiority test that
       rules out, with 97.5% confidence, a candidate worse by more than the margin. A rate
       above 0.5 from a handful of prompts has a wide interval and does not promote.

    Not asked: ``low >= 0.5``, a significant gain. One round trains on a few dozen pairs and
    moves the model a little; demanding significance would reject most real gains and stall
    the loop. A rejected round costs little, as the next one trains on its pairs again
    (``replay_share``), so the gate may be strict about "worse" and lenient about "better".
    """
    floor = ls.gate_min_win_rate - ls.gate_margin
    text = f"win rate {rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}]"
    if rate.rate < ls.gate_min_win_rate:
        return False, f"{text} is below the required {ls.gate_min_win_rate:.2f}"
    if rate.low < floor:
        return False, (
            f"{text}: the interval's lower end is below {floor:.2f}, too little evidence "
            f"that the candidate is not worse (more dev prompts or samples narrow it)"
        )
    return True, f"{text} meets {ls.gate_min_win_rate:.2f} with lower end at least {floor:.2f}"


def _numbers(rate: WinRate) -> dict[str, Any]:
    return {
        "win_rate": round(rate.rate, 4),
        "ci95": [round(rate.low, 4), round(rate.high, 4)],
        "prompts": rate.prompts,
        "comparisons": rate.comparisons,
    }


def _criterion(ls: LoopSettings) -> dict[str, float]:
    return {"min_win_rate": ls.gate_min_win_rate, "margin": ls.gate_margin}


# --- Which gate ------------------------------------------------------------------------------


def dev_prompts(project: Project) -> list[Prompt]:
    """The project's dev prompts the gate uses, the same every round."""
    ensure_splits(project)
    return list(
        Prompt.objects.filter(project=project, split=Prompt.Split.DEV).order_by("pk")[
            :DEV_PROMPTS_MAX
        ]
    )


def gate_mode_of(ls: LoopSettings, prompts: list[Prompt]) -> str:
    """The gate a round runs: ``auto`` resolved to ``simulated`` or ``heldout``."""
    if ls.gate_mode != "auto":
        return ls.gate_mode
    return "simulated" if ls.gate_judge and len(prompts) >= MIN_PROMPTS else "heldout"


def use_gate_judge(loop_round: Round, rule: str) -> None:
    """Let ``rule`` judge the round's gate unless the project's settings name a judge.

    ``run_rounds --simulate <rule>`` calls this for each round it runs; the rule is written
    into the round's settings, so the gate (in this process or a worker) and the round's page
    both know which judge decided.
    """
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=loop_round.pk)
        if locked.settings.get("gate_judge"):
            return
        locked.settings = {**locked.settings, "gate_judge": rule}
        locked.save(update_fields=["settings"])
    loop_round.settings = locked.settings


# --- Sampling the dev prompts ----------------------------------------------------------------


def _dev_samples(
    version: ModelVersion, prompts: list[Prompt], samples: int, ls: LoopSettings
) -> list[list[dict[str, Any]]]:
    """``samples`` samples per dev prompt from ``version``, each prompt with its own seed.

    Every version samples a prompt with the same seed, so two versions with equal weights
    draw equal texts. Samples are kept in the project's eval cache: the serving version was
    the previous round's candidate, and its samples are read back rather than drawn again.
    """
    cache = EvalCache(eval_cache_dir(version.project))
    loaded: Any = None
    out: list[list[dict[str, Any]]] = []
    for prompt in prompts:
        seed = prompt_seed(prompt.messages, ls.seed)
        key = {
            "what": "gate-samples",
            "model": f"{version.pk}:{version.spec}:{version.created_at.isoformat()}",
            "prompt": prompt.pk,
            "seed": seed,
            "k": samples,
            "temperature": ls.temperature,
            "top_p": ls.top_p,
            "max_new_tokens": ls.max_new_tokens,
        }
        row = cache.get(key)
        if row is None:
            # imported here to keep torch (loaded by the generation module) out of the web process
            from ..core.generation import generate

            if loaded is None:
                loaded = load_model(version.spec)
            drawn = generate(
                loaded,
                [prompt.messages],
                k=samples,
                temperature=ls.temperature,
                top_p=ls.top_p,
                max_new_tokens=ls.max_new_tokens,
                seed=seed,
                batch_size=samples,
            )[0]
            row = [
                {"text": s.text, "token_count": s.token_count, "logprob": s.logprob} for s in drawn
            ]
            cache.put(key, row)
        out.append(row)
    return out


# --- The simulated gate ----------------------------------------------------------------------


def simulated_gate(
    version: ModelVersion, opponent: ModelVersion, prompts: list[Prompt], ls: LoopSettings
) -> dict[str, Any]:
    """The rule judge's paired win rate of ``version`` over ``opponent`` on the dev prompts,
    and the decision on it."""
    gate: dict[str, Any] = {
        "mode": "simulated",
        "judge": ls.gate_judge,
        "opponent": opponent.label,
        "criterion": _criterion(ls),
    }
    try:
        rule = resolve_rule(ls.gate_judge) if ls.gate_judge else None
    except InvalidInput as exc:
        return _refused(gate, f"gate_judge: {exc.message}")
    if rule is None:
        return _refused(
            gate,
            "gate_mode simulated needs a judge: set gate_judge, or run the round with "
            "`run_rounds --simulate <rule>`",
        )
    if len(prompts) < MIN_PROMPTS:
        return _refused(gate, _too_few_dev_prompts(len(prompts)))
    mine = _dev_samples(version, prompts, ls.gate_samples, ls)
    theirs = _dev_samples(opponent, prompts, ls.gate_samples, ls)
    verdicts = [
        [
            rule(
                prompt.messages,
                Sample(a["text"], a["token_count"]),
                Sample(b["text"], b["token_count"]),
            )
            for a, b in zip(row_a, row_b, strict=True)
        ]
        for prompt, row_a, row_b in zip(prompts, mine, theirs, strict=True)
    ]
    rate = paired_win_rate(verdicts)
    passed, reason = decide(rate, ls)
    return {
        **gate,
        **_numbers(rate),
        "samples": ls.gate_samples,
        "passed": passed,
        "decision": PROMOTED if passed else REJECTED,
        "reasons": [f"{reason} (judge {ls.gate_judge}, over {opponent.label} on dev prompts)"],
    }


def _refused(gate: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**gate, "passed": False, "decision": REJECTED, "reasons": [reason]}


def _too_few_dev_prompts(n: int) -> str:
    return (
        f"judging text needs at least {MIN_PROMPTS} dev prompts and the project has {n}: "
        f'import prompts with "split": "dev"'
    )


# --- The held-out pair checks ----------------------------------------------------------------


def _noise_margin(p_before: float, p_after: float, n: int) -> float:
    """1.96 standard errors of the difference of two accuracies measured on ``n`` pairs.

    A round's held-out split is small (a tenth of a few dozen pairs), so a drop of a pair
    or two is noise, not a regression; with many held-out pairs the margin shrinks to 0.
    """
    if n <= 0:
        return 0.0
    variance = (p_before * (1 - p_before) + p_after * (1 - p_after)) / n
    return 1.96 * math.sqrt(variance)


def heldout_check(version: ModelVersion, ls: LoopSettings) -> dict[str, Any]:
    """Compare the new version with its parent on the round's held-out pairs."""
    before = version.heldout("before")
    after = version.heldout("after")
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    gate: dict[str, Any] = {"mode": "heldout"}
    if not before or not after:
        reason = "no held-out pairs: the gate had nothing to check"
        return {**gate, "passed": True, "decision": PROMOTED, "reasons": [reason]}
    acc_before, acc_after = before["reward_accuracy"], after["reward_accuracy"]
    allowed = ls.gate_accuracy_tolerance + _noise_margin(
        acc_before, acc_after, int(version.metrics.get("num_heldout_pairs") or 0)
    )
    checks["reward_accuracy"] = {"before": acc_before, "after": acc_after, "allowed_drop": allowed}
    if acc_after < acc_before - allowed:
        reasons.append(
            f"held-out reward accuracy fell from {acc_before:.2f} to {acc_after:.2f} "
            f"(more than the {allowed:.2f} that sampling noise and the tolerance allow)"
        )
    lp_before, lp_after = before["chosen_logp"], after["chosen_logp"]
    checks["chosen_logp"] = {"before": lp_before, "after": lp_after}
    floor = lp_before - ls.gate_max_chosen_logp_drop * abs(lp_before)
    if lp_after < floor:
        reasons.append(
            f"held-out chosen log-prob collapsed from {lp_before:.1f} to {lp_after:.1f} "
            f"(limit {floor:.1f})"
        )
    passed = not reasons
    return {
        **gate,
        "passed": passed,
        "decision": PROMOTED if passed else REJECTED,
        "reasons": reasons or ["held-out reward accuracy and chosen log-prob held up"],
        "checks": checks,
    }


# --- The human gate --------------------------------------------------------------------------


def _gate_comparisons(loop_round: Round, version: ModelVersion) -> Any:
    """The human gate's comparisons: the candidate (side A) against the serving version."""
    return Comparison.objects.filter(
        project_id=loop_round.project_id,
        round=loop_round.number,
        kind=Comparison.Kind.EVAL,
        completion_a__model_version_id=version.pk,
    )


def _completion(
    prompt: Prompt, sample: dict[str, Any], version: ModelVersion, ls: LoopSettings
) -> Completion:
    return Completion.objects.create(
        prompt=prompt,
        text=sample["text"],
        source=Completion.Source.MODEL,
        model_version_id=version.pk,
        generation_params={
            "version": version.label,
            "temperature": ls.temperature,
            "top_p": ls.top_p,
            "max_new_tokens": ls.max_new_tokens,
            "seed": prompt_seed(prompt.messages, ls.seed),
            "purpose": "gate",
        },
        token_count=sample["token_count"],
        logprob=sample["logprob"],
    )


def _open_human_gate(
    loop_round: Round,
    version: ModelVersion,
    opponent: ModelVersion,
    prompts: list[Prompt],
    ls: LoopSettings,
) -> dict[str, Any] | None:
    """Sample the human gate's comparisons and store them with the waiting gate.

    ``human_gate_comparisons`` (M) slots are spread over the dev prompts in turn, each
    prompt sampled ``ceil(M / prompts)`` times by both versions with the same seeds. A slot
    where both versions wrote the same text is a tie by construction: it is not shown to
    people and counts as a tie in the win rate. Returns the gate to conclude at once (nothing
    to show, or too few dev prompts), or None once the gate waits for people.
    """
    gate: dict[str, Any] = {
        "mode": "human",
        "opponent": opponent.label,
        "opponent_id": opponent.pk,
        "criterion": _criterion(ls),
    }
    if len(prompts) < MIN_PROMPTS:
        return _refused(gate, _too_few_dev_prompts(len(prompts)))
    wanted = ls.human_gate_comparisons
    per_prompt = math.ceil(wanted / len(prompts))
    mine = _dev_samples(version, prompts, per_prompt, ls)
    theirs = _dev_samples(opponent, prompts, per_prompt, ls)
    slots = [(i, j) for j in range(per_prompt) for i in range(len(prompts))][:wanted]
    shown = [(i, j) for i, j in slots if mine[i][j]["text"].strip() != theirs[i][j]["text"].strip()]
    identical: dict[str, int] = defaultdict(int)
    for i, j in slots:
        if (i, j) not in shown:
            identical[str(prompts[i].pk)] += 1
    gate.update(needed=len(shown), judged=0, identical=dict(identical))
    if not shown:
        return _human_decision(gate, {}, ls)
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=loop_round.pk)
        if locked.state != Round.State.EVALUATING or _gate_comparisons(locked, version).exists():
            return None  # another delivery opened it
        for i, j in shown:
            a = _completion(prompts[i], mine[i][j], version, ls)
            b = _completion(prompts[i], theirs[i][j], opponent, ls)
            Comparison.objects.create(
                project_id=locked.project_id,
                prompt=prompts[i],
                completion_a=a,
                completion_b=b,
                round=locked.number,
                kind=Comparison.Kind.EVAL,
            )
        version.gate = {
            **gate,
            "passed": None,
            "decision": WAITING,
            "reasons": [
                f"waiting for people to judge {len(shown)} comparisons of {version.label} "
                f"against {opponent.label} on dev prompts"
            ],
        }
        version.save(update_fields=["gate"])
    return None


def _people_outcomes(comparisons: Any, first_version_id: int) -> dict[int, list[float]]:
    """People's outcomes for ``first_version_id``'s side per prompt (ties and both-bad half).

    Every judgment counts once; simulated annotators' judgments are left out.
    """
    rows = (
        Judgment.objects.filter(comparison__in=comparisons)
        .exclude(source=Judgment.Source.SIMULATED)
        .values_list(
            "comparison__prompt_id", "choice", "comparison__completion_a__model_version_id"
        )
        .order_by("pk")
    )
    by_prompt: dict[int, list[float]] = defaultdict(list)
    for prompt_id, choice, a_version in rows:
        verdict = choice if choice in (Judgment.Choice.A, Judgment.Choice.B) else "tie"
        score = outcome(verdict)
        by_prompt[prompt_id].append(score if a_version == first_version_id else 1.0 - score)
    return by_prompt


def _human_decision(
    gate: dict[str, Any], by_prompt: dict[int, list[float]], ls: LoopSettings
) -> dict[str, Any]:
    clusters = {pk: list(scores) for pk, scores in by_prompt.items()}
    for pk, n in gate.get("identical", {}).items():
        clusters.setdefault(int(pk), []).extend([0.5] * n)
    rate = bootstrap_win_rate(list(clusters.values()))
    passed, reason = decide(rate, ls)
    return {
        **gate,
        **_numbers(rate),
        "passed": passed,
        "decision": PROMOTED if passed else REJECTED,
        "reasons": [f"{reason} (people's judgments over {gate['opponent']} on dev prompts)"],
    }


def check_human_gate(round_id: int) -> bool:
    """Decide a waiting human gate once its comparisons are judged; True when it decided.

    A comparison counts as judged once a person has judged it; every person's judgment then
    counts in the win rate. Until then the count of judged comparisons is kept on the gate.
    """
    with transaction.atomic():
        loop_round = Round.objects.select_for_update().filter(pk=round_id).first()
        if loop_round is None or loop_round.state != Round.State.EVALUATING:
            return False
        version = ModelVersion.objects.filter(trained_in=loop_round).first()
        if version is None or version.gate.get("decision") != WAITING:
            return False
        comparisons = _gate_comparisons(loop_round, version)
        by_prompt = _people_outcomes(comparisons, version.pk)
        judged = (
            Judgment.objects.filter(comparison__in=comparisons)
            .exclude(source=Judgment.Source.SIMULATED)
            .values("comparison_id")
            .distinct()
            .count()
        )
        gate = dict(version.gate)
        if judged < gate["needed"]:
            if judged != gate.get("judged"):
                version.gate = {**gate, "judged": judged}
                version.save(update_fields=["gate"])
            return False
        ls = LoopSettings.from_dict(loop_round.settings)
        _conclude(loop_round, version, _human_decision({**gate, "judged": judged}, by_prompt, ls))
    return True


# --- Deciding a round ------------------------------------------------------------------------


def _conclude(loop_round: Round, version: ModelVersion, gate: dict[str, Any]) -> None:
    """Store the gate on the version and promote or reject it (the caller holds the round's
    row lock)."""
    version.gate = gate
    version.save(update_fields=["gate"])
    if gate["passed"]:
        promote(version)
        loop_round.state = Round.State.PROMOTED
        loop_round.error = ""
    else:
        version.state = ModelVersion.State.REJECTED
        version.save(update_fields=["state"])
        loop_round.state = Round.State.REJECTED
        loop_round.error = "; ".join(gate["reasons"])
    loop_round.finished_at = timezone.now()
    loop_round.save(update_fields=["state", "error", "finished_at", "updated_at"])
    if gate["passed"] and LoopSettings.from_dict(loop_round.settings).auto_next_round:
        project_id = loop_round.project_id
        dispatch.on_commit(lambda: _start_next_round(project_id))


def _gate(loop_round: Round, version: ModelVersion, ls: LoopSettings) -> dict[str, Any] | None:
    """The gate's result, or None when it waits for people (sampling happens here)."""
    prompts = dev_prompts(loop_round.project)
    mode = gate_mode_of(ls, prompts)
    if mode == "off":
        return {"mode": "off", "passed": True, "decision": PROMOTED, "reasons": ["gate off"]}
    if mode == "heldout":
        gate = heldout_check(version, ls)
        if ls.gate_judge:  # auto with a judge: say why it did not judge
            gate["reasons"] = [_too_few_dev_prompts(len(prompts)), *gate["reasons"]]
        return gate
    opponent = serving_version(loop_round.project)
    try:
        if mode == "human":
            return _open_human_gate(loop_round, version, opponent, prompts, ls)
        return simulated_gate(version, opponent, prompts, ls)
    except Exception as exc:  # a model that fails to load or sample must not hang the round
        log.exception("gate of %s failed", version)
        return _refused({"mode": mode}, f"the gate could not sample the dev prompts: {exc}")


def evaluate_round(round_id: int) -> str:
    """Gate the round's new version: promote it, reject it, or open the human gate.

    Sampling the dev prompts happens outside any transaction; the decision is written under
    the round's row lock, once per round, however often this runs.
    """
    loop_round = Round.objects.select_related("project").get(pk=round_id)
    if loop_round.state != Round.State.EVALUATING:
        return f"skipped: round is {loop_round.state}"
    version = ModelVersion.objects.get(trained_in=loop_round)
    if version.gate.get("decision") == WAITING:
        check_human_gate(round_id)
        return Round.objects.get(pk=round_id).state
    ls = LoopSettings.from_dict(loop_round.settings)
    gate = _gate(loop_round, version, ls)
    if gate is None:
        check_human_gate(round_id)  # people may have judged already (a redelivered task)
        return Round.objects.get(pk=round_id).state
    with transaction.atomic():
        locked = Round.objects.select_for_update().get(pk=round_id)
        if locked.state != Round.State.EVALUATING:
            return f"skipped: round is {locked.state}"
        version.refresh_from_db()
        if version.gate.get("decision") in (PROMOTED, REJECTED, WAITING):
            return locked.state
        _conclude(locked, version, gate)
    return locked.state


# --- Rolling back ----------------------------------------------------------------------------


def roll_back_if_worse(loop_round: Round) -> str | None:
    """With ``auto_rollback``: restore the parent when people find the round's policy worse.

    Called when the round's collection closes. The round's eval comparisons pit its policy
    (promoted by the previous round) against its parent; when people's win rate of the policy
    over the parent has a 95% interval entirely below 0.5 (over at least ``MIN_PROMPTS``
    prompts), the parent serves again, the policy is marked rejected, and the round ends
    without training, its pairs drawn from the rolled-back version (later rounds still replay
    them). The check and its numbers are stored on the policy's gate either way.

    Returns:
        Why the round was closed, or None when it goes on to training.
    """
    ls = LoopSettings.from_dict(loop_round.settings)
    if not ls.auto_rollback:
        return None
    with transaction.atomic():
        locked = Round.objects.select_for_update().select_related("policy").get(pk=loop_round.pk)
        policy = locked.policy
        if locked.state != Round.State.COLLECTING or policy.parent_id is None:
            return None
        if policy.state != ModelVersion.State.SERVING:
            return None  # a lead changed the serving version meanwhile
        parent = ModelVersion.objects.get(pk=policy.parent_id)
        comparisons = Comparison.objects.filter(
            project_id=locked.project_id, round=locked.number, kind=Comparison.Kind.EVAL
        ).filter(
            completion_a__model_version_id__in=[policy.pk, parent.pk],
            completion_b__model_version_id__in=[policy.pk, parent.pk],
        )
        by_prompt = _people_outcomes(comparisons, policy.pk)
        if len(by_prompt) < MIN_PROMPTS:
            return None
        rate = bootstrap_win_rate(list(by_prompt.values()))
        worse = rate.high < 0.5
        check = {
            **_numbers(rate),
            "round": locked.number,
            "opponent": parent.label,
            "rolled_back": worse,
        }
        policy.gate = {**policy.gate, "rollback": check}
        policy.save(update_fields=["gate"])
        if not worse:
            return None
        promote(parent)
        policy.state = ModelVersion.State.REJECTED
        policy.save(update_fields=["state"])
        message = (
            f"{policy.label} rolled back to {parent.label}: people's win rate of "
            f"{policy.label} over {parent.label} is {rate.rate:.2f} "
            f"[{rate.low:.2f}, {rate.high:.2f}], significantly below 0.5; round "
            f"{locked.number} ends without training"
        )
        locked.state = Round.State.REJECTED
        locked.error = message
        locked.finished_at = timezone.now()
        locked.save(update_fields=["state", "error", "finished_at", "updated_at"])
        if ls.auto_next_round:
            project_id = locked.project_id
            dispatch.on_commit(lambda: _start_next_round(project_id))
    return message


def _start_next_round(project_id: int) -> None:
    project = Project.objects.get(pk=project_id)
    try:
        start_round(project)
    except (Conflict, InvalidInput) as exc:
        log.info("next round of %s not started: %s", project.slug, exc)
