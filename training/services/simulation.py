"""Simulated annotators: programmatic preferences that judge through the ordinary queue."""

from __future__ import annotations

import itertools
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.utils.module_loading import import_string

from annotate import services as annotate_services
from annotate.errors import InvalidInput
from annotate.models import Judgment, Membership, Project

# rule(messages, text_a, text_b) -> "a", "b" or "tie"
Rule = Callable[[list[dict[str, Any]], str, str], str]

_LIST_LINE = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+", re.MULTILINE)


def _prefer_lower(a: float, b: float) -> str:
    if a == b:
        return "tie"
    return "a" if a < b else "b"


def shorter(messages: list[dict[str, Any]], a: str, b: str) -> str:
    return _prefer_lower(len(a.strip()), len(b.strip()))


def longer(messages: list[dict[str, Any]], a: str, b: str) -> str:
    return _prefer_lower(-len(a.strip()), -len(b.strip()))


def no_lists(messages: list[dict[str, Any]], a: str, b: str) -> str:
    return _prefer_lower(len(_LIST_LINE.findall(a)), len(_LIST_LINE.findall(b)))


def contains(word: str) -> Rule:
    pattern = re.compile(re.escape(word), re.IGNORECASE)

    def rule(messages: list[dict[str, Any]], a: str, b: str) -> str:
        return _prefer_lower(-len(pattern.findall(a)), -len(pattern.findall(b)))

    return rule


def resolve_rule(text: str) -> Rule:
    """``shorter``, ``longer``, ``no-lists``, ``contains:<word>`` or a dotted path to a callable."""
    named: dict[str, Rule] = {"shorter": shorter, "longer": longer, "no-lists": no_lists}
    if text in named:
        return named[text]
    if text.startswith("contains:"):
        word = text.split(":", 1)[1]
        if not word:
            raise InvalidInput("rule contains:<word> needs a word")
        return contains(word)
    if "." in text:
        try:
            found = import_string(text.replace(":", "."))
        except ImportError as exc:
            raise InvalidInput(f"rule {text!r}: {exc}") from None
        if not callable(found):
            raise InvalidInput(f"rule {text!r} is not callable")
        return found
    raise InvalidInput(
        f"unknown rule {text!r}: use shorter, longer, no-lists, contains:<word> "
        "or a dotted path to a callable"
    )


def rule_win_rate(
    rule: Rule, prompts: list[list[dict[str, Any]]], new: list[str], old: list[str]
) -> float:
    """Share of prompts where the rule prefers ``new`` over ``old`` (ties count half)."""
    if not prompts:
        return float("nan")
    score = 0.0
    for messages, a, b in zip(prompts, new, old, strict=True):
        verdict = rule(messages, a, b)
        score += 1.0 if verdict == "a" else 0.5 if verdict == "tie" else 0.0
    return score / len(prompts)


def rule_scores(rule: Rule, messages: list[dict[str, Any]], texts: list[str]) -> list[float]:
    """Each text's score in a round robin judged by the rule: one per win, half per tie.

    Turns a pairwise rule into the per-sample scores that ``best_vs_worst`` pairing ranks by;
    the rule is asked once per unordered pair, without the annotators' noise.
    """
    scores = [0.0] * len(texts)
    for i, j in itertools.combinations(range(len(texts)), 2):
        verdict = rule(messages, texts[i], texts[j])
        if verdict == "a":
            scores[i] += 1.0
        elif verdict == "b":
            scores[j] += 1.0
        else:
            scores[i] += 0.5
            scores[j] += 0.5
    return scores


@dataclass
class SimulationReport:
    judged: int = 0
    skipped: int = 0
    by_annotator: dict[str, int] = field(default_factory=dict)


def simulated_users(project: Project, count: int) -> list[Any]:
    """The project's simulated annotators ``sim-<slug>-1..count``, created on first use."""
    users = []
    model = get_user_model()
    for i in range(1, count + 1):
        user, created = model.objects.get_or_create(username=f"sim-{project.slug}-{i}"[:150])
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        Membership.objects.get_or_create(
            project=project, user=user, defaults={"role": Membership.Role.ANNOTATOR}
        )
        users.append(user)
    return users


def _noisy(verdict: str, noise: float, rng: random.Random) -> str:
    if rng.random() >= noise:
        return verdict
    return rng.choice([c for c in ("a", "b", "tie") if c != verdict])


def _shown(verdict: str, left_is_a: bool) -> str:
    if verdict == "tie":
        return "tie"
    return "left" if (verdict == "a") == left_is_a else "right"


def simulate_annotators(
    project: Project,
    rule: Rule | str,
    *,
    annotators: int = 3,
    noise: float = 0.1,
    round_number: int | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> SimulationReport:
    """Judge open comparisons as fake annotators, through the same queue and judgment service
    as people use.

    Args:
        round_number: judge only this round's comparisons; pairs of other rounds that the
            queue offers are skipped by the simulated annotator (and not offered to it again).
            None judges every open comparison.
        limit: stop after this many judgments.
    """
    if not 0.0 <= noise <= 1.0:
        raise InvalidInput("noise must lie between 0 and 1")
    if annotators < 1:
        raise InvalidInput("annotators must be at least 1")
    decide = resolve_rule(rule) if isinstance(rule, str) else rule
    rng = random.Random(seed)
    report = SimulationReport()
    active = simulated_users(project, annotators)
    while active and (limit is None or report.judged < limit):
        for user in list(active):
            assignment = annotate_services.next_assignment(project, user)
            if assignment is None:
                active.remove(user)
                continue
            comparison = assignment.comparison
            if round_number is not None and comparison.round != round_number:
                annotate_services.skip(project, user, comparison.pk)
                report.skipped += 1
                continue
            verdict = decide(
                comparison.prompt.messages,
                comparison.completion_a.text,
                comparison.completion_b.text,
            )
            choice = _shown(_noisy(verdict, noise, rng), assignment.left_is_a)
            judgment, created = annotate_services.submit_judgment(
                user,
                comparison.pk,
                annotate_services.JudgmentInput(choice=choice, client_id=uuid.uuid4()),
            )
            Judgment.objects.filter(pk=judgment.pk).update(source=Judgment.Source.SIMULATED)
            if created:
                report.judged += 1
                name = user.get_username()
                report.by_annotator[name] = report.by_annotator.get(name, 0) + 1
            if limit is not None and report.judged >= limit:
                break
    return report
