"""The training app's business logic: rounds, pairs, simulated annotators.

Views, API endpoints, tasks and commands call these functions; none of them imports torch at
module level.
"""

from ..loop_settings import base_model_of, loop_settings
from .dispatch import in_process
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
    models_dir,
    on_judgment_saved,
    promote,
    retry,
    serving_version,
    start_round,
    train_round,
    trigger_fired,
)
from .simulation import resolve_rule, rule_win_rate, simulate_annotators
from .training_data import AggregatedPair, WinRate, aggregate, eval_win_rates, round_pairs

__all__ = [
    "AggregatedPair",
    "WinRate",
    "aggregate",
    "base_model_of",
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
    "in_process",
    "loop_settings",
    "models_dir",
    "on_judgment_saved",
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
]
