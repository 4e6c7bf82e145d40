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
# Words and punctuation marks: the token count of a text whose sampled count is unknown
# (close to a BPE tokenizer's count on English prose, never more than a few tokens apart on
# short answers).
_TOKENISH = re.compile(r"\w+|[^\w\s]")


class Sample(str):
    """A completion's text that also carries the number of tokens sampled for it.

    Rules receive completions as plain strings; callers that know the sampled token count
    (a stored completion, a fresh sample) pass a ``Sample`` so that ``cap:`` counts real
    tokens. A dotted-path rule sees an ordinary ``str``.
    """

    tokens: int | None

    def __new__(cls, text: str, tokens: int | None = None) -> Sample:
        sample = super().__new__(cls, text)
        sample.tokens = tokens
        return sample


def token_count(text: str) -> int:
    """The sampled token count of a ``Sample``; for other text, its words and punctuation."""
    tokens = getattr(text, "tokens", None)
    return tokens if tokens is not None else len(_TOKENISH.findall(text))


def _prefer_lower(a: float, b: float) -> str:
    if a == b:
        return "tie"
    return "a" if a < b else "b"


def _prefer_higher(a: float, b: float) -> str:
    return _prefer_lower(-a, -b)


def shorter(messages: list[dict[str, Any]], a: str, b: str) -> str:
    return _prefer_lower(len(a.strip()), len(b.strip()))


def longer(messages: list[dict[str, Any]], a: str, b: str) -> str:
    return _prefer_lower(-len(a.strip()), -len(b.strip()))


def no_lists(messages: list[dict[str, Any]], a: str, b: str) -> str:
    return _prefer_lower(len(_LIST_LINE.findall(a)), len(_LIST_LINE.findall(b)))


def _scores_one_when(found: Callable[[str], bool]) -> Rule:
    """A rule that scores a sample 1 when ``found(text)``, else 0; the higher score wins."""

    def rule(messages: list[dict[str, Any]], a: str, b: str) -> str:
        return _prefer_higher(float(found(a)), float(found(b)))

    return rule


def contains(word: str) -> Rule:
    """Prefer the sample in which ``word`` occurs as a whole word, case-insensitively.

    Occurring once is enough: repeating the word wins nothing more, so the rule cannot be
    won by saying it over and over, and it is no reason to write longer answers.
    """
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)
    return _scores_one_when(lambda text: pattern.search(text) is not None)


def regex(pattern: str) -> Rule:
    """Prefer the sample that ``pattern`` matches somewhere (Python ``re.search``)."""
    compiled = re.compile(pattern)
    return _scores_one_when(lambda text: compiled.search(text) is not None)


def starts_with(prefix: str) -> Rule:
    """Prefer the sample that opens with ``prefix`` (case-insensitive, after leading blanks)."""
    folded = prefix.casefold()
    return _scores_one_when(lambda text: text.lstrip().casefold().startswith(folded))


def max_words(limit: int) -> Rule:
    """Prefer the sample nearer to at most ``limit`` words; two that both comply tie.

    Unlike ``shorter`` a short answer wins nothing once it is short enough, so the rule does
    not reward stopping early.
    """

    def excess(text: str) -> int:
        return max(0, len(text.split()) - limit)

    def rule(messages: list[dict[str, Any]], a: str, b: str) -> str:
        return _prefer_lower(excess(a), excess(b))

    return rule


def cap(limit: int, inner: Rule) -> Rule:
    """A sample over ``limit`` tokens loses to one within it; otherwise ``inner`` decides.

    Tokens are the sampled count where the caller passes a ``Sample``, else an estimate
    (see ``token_count``).
    """

    def rule(messages: list[dict[str, Any]], a: str, b: str) -> str:
        over_a, over_b = token_count(a) > limit, token_count(b) > limit
        if over_a != over_b:
            return "b" if over_a else "a"
        return inner(messages, a, b)

    return rule


class _BadRule(Exception):
    """Why a rule spec does not parse; ``resolve_rule`` names the whole spec."""


def _no_argument(name: str, rule: Rule) -> Callable[[str], Rule]:
    def build(args: str) -> Rule:
        if args:
            raise _BadRule(f"{name} takes no argument")
        return rule

    return build


def _text_argument(name: str, make: Callable[[str], Rule], what: str) -> Callable[[str], Rule]:
    def build(args: str) -> Rule:
        if not args:
            raise _BadRule(f"{name}:<{what}> needs a {what}")
        return make(args)

    return build


def _whole_number(value: str, usage: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _BadRule(f"{usage} needs a whole number of at least 1, got {value!r}") from None
    if number < 1:
        raise _BadRule(f"{usage} needs a whole number of at least 1, got {value!r}")
    return number


def _regex(args: str) -> Rule:
    if not args:
        raise _BadRule("regex:<pattern> needs a pattern")
    try:
        return regex(args)
    except re.error as exc:
        raise _BadRule(f"not a valid regular expression ({exc})") from None


def _max_words(args: str) -> Rule:
    return max_words(_whole_number(args, "max-words:<n>"))


def _cap(args: str) -> Rule:
    limit, sep, inner = args.partition(":")
    if not sep or not inner:
        raise _BadRule("use cap:<tokens>:<rule>, for example cap:64:contains:please")
    tokens = _whole_number(limit, "cap:<tokens>:<rule>")
    try:
        return cap(tokens, _parse(inner))
    except _BadRule as exc:
        raise _BadRule(f"inner rule {inner!r}: {exc}") from None


# Built-in rules by name: each builder takes the text after "name:" ("" when there is none).
_BUILT_IN: dict[str, Callable[[str], Rule]] = {
    "shorter": _no_argument("shorter", shorter),
    "longer": _no_argument("longer", longer),
    "no-lists": _no_argument("no-lists", no_lists),
    "contains": _text_argument("contains", contains, "word"),
    "regex": _regex,
    "starts-with": _text_argument("starts-with", starts_with, "text"),
    "max-words": _max_words,
    "cap": _cap,
}
RULE_SYNTAX = (
    "shorter, longer, no-lists, contains:<word>, regex:<pattern>, starts-with:<text>, "
    "max-words:<n>, cap:<tokens>:<rule>, or a dotted path to a callable "
    "(messages, text_a, text_b) -> 'a' | 'b' | 'tie'"
)


def _parse(text: str) -> Rule:
    name, _, args = text.partition(":")
    if name in _BUILT_IN:
        return _BUILT_IN[name](args)
    if "." in text:
        try:
            found = import_string(text.replace(":", "."))
        except ImportError as exc:
            raise _BadRule(str(exc)) from None
        if not callable(found):
            raise _BadRule("not callable")
        rule: Rule = found
        return rule
    raise _BadRule(f"unknown rule: use {RULE_SYNTAX}")


def dotted_paths(text: str) -> list[str]:
    """The dotted paths a rule spec would import (inside ``cap:`` too), without importing."""
    name, _, args = text.partition(":")
    if name == "cap":
        return dotted_paths(args.partition(":")[2])
    if name in _BUILT_IN or "." not in text:
        return []
    return [text.replace(":", ".")]


def check_lead_rule(text: str, allowed_modules: list[str]) -> None:
    """A judge that a lead names in the loop settings (``gate_judge``): a built-in rule, or a
    callable inside one of ``allowed_modules`` (the operator's ``PREFLOOP_JUDGE_MODULES``), so
    that a project's settings cannot make a worker import and call arbitrary code.

    Raises:
        InvalidInput: the spec is not allowed or does not name a rule; the message says why.
    """
    for path in dotted_paths(text):
        module = path.rpartition(".")[0]
        if not any(module == m or module.startswith(m + ".") for m in allowed_modules):
            raise InvalidInput(
                f"rule {text!r}: use a built-in rule ({RULE_SYNTAX.split(', or a dotted')[0]}); "
                "a callable must live in a module the server lists in PREFLOOP_JUDGE_MODULES"
            )
    resolve_rule(text)


def resolve_rule(text: str) -> Rule:
    """The rule a spec names: a built-in ``name`` or ``name:args``, else a dotted path.

    Built-ins: ``shorter``, ``longer``, ``no-lists``; ``contains:<word>`` (a sample scores 1
    when the word occurs as a whole word, case-insensitive, else 0), ``regex:<pattern>``
    (1 when the pattern matches), ``starts-with:<text>`` (1 when the sample opens with the
    text) -- for these three the higher score wins and equal scores tie; ``max-words:<n>``
    (fewer words wins, a tie when both have at most n); ``cap:<tokens>:<rule>`` (a sample
    over the cap loses to one within it, otherwise the inner rule decides). Anything else
    is a dotted path to a callable ``(messages, text_a, text_b) -> "a" | "b" | "tie"``
    (``package.module.name`` or ``package.module:name``).

    Raises:
        InvalidInput: the spec does not name a rule; the message quotes the spec.
    """
    try:
        return _parse(text)
    except _BadRule as exc:
        raise InvalidInput(f"rule {text!r}: {exc}") from None


def rule_win_rate(
    rule: Rule, prompts: list[list[dict[str, Any]]], new: list[str], old: list[str]
) -> float:
    """Share of prompts where the rule prefers ``new`` over ``old``, a tie counting half a win.

    0.5 means no difference; with a ``contains`` rule, 0.8 means the word's rate rose by
    0.6 (for example from 10% to 70% of samples). Pass ``Sample`` texts so ``cap`` counts
    sampled tokens.
    """
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
        round_number: judge only this round's comparisons (the queue offers no others).
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
            assignment = annotate_services.next_assignment(project, user, round_number=round_number)
            if assignment is None:
                active.remove(user)
                continue
            comparison = assignment.comparison
            a, b = comparison.completion_a, comparison.completion_b
            verdict = decide(
                comparison.prompt.messages,
                Sample(a.text, a.token_count),
                Sample(b.text, b.token_count),
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
