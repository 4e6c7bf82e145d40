"""The training app's business logic: rounds, pairs, simulated annotators.

Views, API endpoints, tasks and commands call these functions; none of them imports torch at
module level.
"""

from .pairs import AggregatedPair, WinRate, aggregate, eval_win_rates, round_pairs
from .rounds import (
    base_version,
    begin_training,
    check_trigger,
    check_triggers,
    collecting_progress,
    current_round,
    evaluate_round,
    fail_lost_runs,
    gate_check,
    generate_round,
    get_round,
    get_version,
    loop_settings,
    models_dir,
    on_judgment_recorded,
    promote,
    retry,
    serving_version,
    start_round,
    train_round,
    trigger_fired,
    without_auto_dispatch,
)
from .simulation import resolve_rule, rule_win_rate, simulate_annotators

__all__ = [
    "AggregatedPair",
    "WinRate",
    "aggregate",
    "base_version",
    "begin_training",
    "check_trigger",
    "check_triggers",
    "collecting_progress",
    "current_round",
    "eval_win_rates",
    "evaluate_round",
    "fail_lost_runs",
    "gate_check",
    "generate_round",
    "get_round",
    "get_version",
    "loop_settings",
    "models_dir",
    "on_judgment_recorded",
    "promote",
    "resolve_rule",
    "retry",
    "round_pairs",
    "rule_win_rate",
    "serving_version",
    "simulate_annotators",
    "start_round",
    "train_round",
    "trigger_fired",
    "without_auto_dispatch",
]
