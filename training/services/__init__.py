"""The training app's business logic: the round lifecycle, training data, simulated annotators.

Views, API endpoints, tasks and commands call these functions; none of them imports torch at
module level. Each write owns its transaction and checks the row's state under a lock first, so
a Celery task delivered twice (acks_late, a worker killed mid-task) does its work once: a round
gets one set of comparisons, trains at most one version and promotes at most once.

A round's life, module by module: ``generation`` opens it and samples its comparisons,
``triggers`` watches the judgments come in, ``training_runs`` trains the new version, ``gate``
promotes or rejects it, ``versions`` keeps the project's versions. ``dispatch`` queues the
tasks that carry a round from one step to the next.
"""

from ..loop_settings import base_model_of, loop_settings
from .dispatch import in_process
from .gate import (
    check_human_gate,
    evaluate_round,
    heldout_check,
    roll_back_if_worse,
)
from .gate_rules import use_gate_judge
from .generation import current_round, generate_round, get_round, start_round
from .recovery import recover_stuck_rounds
from .simulation import resolve_rule, rule_win_rate, simulate_annotators
from .training_data import AggregatedPair, WinRate, aggregate, eval_win_rates, round_pairs
from .training_runs import begin_training, fail_lost_runs, retry, train_round
from .triggers import (
    check_trigger,
    check_triggers,
    collecting_progress,
    on_judgment_recorded,
    trigger_fired,
)
from .versions import (
    base_version,
    current_base_version,
    get_version,
    models_dir,
    promote,
    serving_version,
)

__all__ = [
    "AggregatedPair",
    "WinRate",
    "aggregate",
    "base_model_of",
    "base_version",
    "begin_training",
    "check_human_gate",
    "check_trigger",
    "check_triggers",
    "collecting_progress",
    "current_base_version",
    "current_round",
    "eval_win_rates",
    "evaluate_round",
    "fail_lost_runs",
    "generate_round",
    "get_round",
    "get_version",
    "heldout_check",
    "in_process",
    "loop_settings",
    "models_dir",
    "on_judgment_recorded",
    "promote",
    "recover_stuck_rounds",
    "resolve_rule",
    "retry",
    "roll_back_if_worse",
    "round_pairs",
    "rule_win_rate",
    "serving_version",
    "simulate_annotators",
    "start_round",
    "train_round",
    "trigger_fired",
    "use_gate_judge",
]
