"""Collecting judgments: a round's progress and the trigger that closes it for training.

The trigger is checked after each judgment commits (``on_judgment_recorded``, receiving
annotate's ``judgment_recorded`` signal) and by the beat (``check_triggers``), which catches
judgments written without the signal (imports). Both also re-check a round whose human gate
waits for people's judgments (``gate.check_human_gate``).

After a judgment the round's stored progress is counted up by one instead of recounted (a
recount reads every pair of the round, and rounds can hold hundreds of thousands); the full
check (``check_trigger``) runs when the counted progress says the trigger may have fired. It
recounts, so a count that ran ahead (an undone judgment, a lowered overlap) costs one recount
and never starts training early; one that lags behind (imports, a raised overlap) is caught by
the beat, as imports always were.
"""

from __future__ import annotations

from typing import Any

from django.db.models import F, Sum, Value
from django.db.models.functions import Least

from annotate.errors import Conflict, InvalidInput
from annotate.models import Comparison, Judgment

from ..loop_settings import LoopSettings
from ..models import Round
from . import dispatch
from .gate import check_human_gate
from .training_runs import begin_training


def round_comparisons(loop_round: Round) -> Any:
    return Comparison.objects.filter(project_id=loop_round.project_id, round=loop_round.number)


def collecting_progress(loop_round: Round) -> tuple[int, int]:
    """(judgments counted toward the overlap, judgments the round needs)."""
    overlap = loop_round.project.overlap
    comparisons = round_comparisons(loop_round)
    done = comparisons.aggregate(n=Sum(Least("judgment_count", Value(overlap))))["n"] or 0
    return int(done), comparisons.count() * overlap


def trigger_fired(loop_round: Round) -> bool:
    ls = LoopSettings.from_dict(loop_round.settings)
    if ls.trigger == "manual":
        return False
    comparisons = round_comparisons(loop_round)
    if not comparisons.exists():
        return False
    all_judged = not comparisons.filter(judgment_count__lt=loop_round.project.overlap).exists()
    if ls.trigger == "all_judged" or all_judged:
        return all_judged
    # Counting stops at min_pairs: a round may hold far more judged pairs than that.
    judged = comparisons.filter(kind=Comparison.Kind.TRAIN, judgment_count__gte=1)
    return judged[: ls.min_pairs].count() >= ls.min_pairs


def check_trigger(round_id: int) -> bool:
    """Start training when the round's trigger has fired; True when it did."""
    loop_round = Round.objects.select_related("project").filter(pk=round_id).first()
    if loop_round is None or loop_round.state != Round.State.COLLECTING:
        return False
    done, total = collecting_progress(loop_round)
    Round.objects.filter(pk=round_id).update(progress_done=done, progress_total=total)
    if not trigger_fired(loop_round):
        return False
    try:
        begin_training(loop_round)
    except InvalidInput as exc:
        Round.objects.filter(pk=round_id).update(error=exc.message)
        return False
    except Conflict:
        return False
    return True


def check_triggers() -> int:
    """For the beat: check every collecting round and every human gate that waits; returns
    how many rounds started training."""
    for round_id in list(
        Round.objects.filter(state=Round.State.EVALUATING).values_list("pk", flat=True)
    ):
        check_human_gate(round_id)
    ids = Round.objects.filter(state=Round.State.COLLECTING).values_list("pk", flat=True)
    return sum(check_trigger(round_id) for round_id in list(ids))


def count_judgment(round_id: int, counts: bool) -> bool:
    """Count one new judgment into a collecting round's progress (``counts``: whether it is
    within its pair's overlap), then run the full check when the trigger may have fired;
    returns whether training started.

    Every trigger needs all pairs judged (progress done reaching its total) or, for
    ``min_pairs``, that many judged train pairs, each of which counted at least once.
    """
    rows = Round.objects.filter(pk=round_id, state=Round.State.COLLECTING)
    if counts:
        rows.update(progress_done=F("progress_done") + 1)
    found = rows.values_list("progress_done", "progress_total", "settings").first()
    if found is None:
        return False
    done, total, settings = found
    ls = LoopSettings.from_dict(settings)
    if ls.trigger == "manual":
        return False
    if done >= total or (ls.trigger == "min_pairs" and done >= ls.min_pairs):
        return check_trigger(round_id)
    return False


def on_judgment_recorded(sender: Any, judgment: Judgment, **kwargs: Any) -> None:
    """After a new judgment commits, count it into its round and see whether the round's
    trigger fired."""
    pair = judgment.comparison
    round_number, project_id, judged = pair.round, pair.project_id, pair.judgment_count
    if round_number is None:
        return
    overlap = judgment.project.overlap

    def check() -> None:
        found = (
            Round.objects.filter(
                project_id=project_id,
                number=round_number,
                state__in=[Round.State.COLLECTING, Round.State.EVALUATING],
            )
            .values_list("pk", "state")
            .first()
        )
        if found is None:
            return
        round_id, state = found
        if state == Round.State.COLLECTING:
            # ``judged`` is the pair's count with this judgment, read under the pair's lock.
            count_judgment(round_id, counts=judged <= overlap)
        else:
            check_human_gate(round_id)

    dispatch.on_commit(check)
