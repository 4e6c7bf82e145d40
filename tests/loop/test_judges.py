"""Rule judges that cannot be won by stopping early: each on fixed samples worked out by hand."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from annotate.errors import InvalidInput
from annotate.models import Judgment
from tests.factories import ComparisonFactory, CompletionFactory, ProjectFactory, PromptFactory
from training import services
from training.services.simulation import (
    Sample,
    resolve_rule,
    rule_win_rate,
    shorter,
    token_count,
)


def judge(spec: str, a: str, b: str) -> str:
    return resolve_rule(spec)([{"role": "user", "content": "Hi"}], a, b)


@pytest.mark.parametrize(
    ("spec", "a", "b", "verdict"),
    [
        # contains: whole words, any case, once is enough
        ("contains:please", "Please help.", "Help me.", "a"),
        ("contains:please", "no", "PLEASE do", "b"),
        ("contains:please", "please please please", "please", "tie"),
        ("contains:please", "pleased to help", "displease", "tie"),  # not whole words
        ("contains:please", "nothing", "neither", "tie"),
        ("contains:please", "(please)", "pleasemore", "a"),
        ("contains:thank you", "Thank you!", "thank-you", "a"),
        # regex: a match anywhere scores 1
        ("regex:\\d+", "in 2024", "in spring", "a"),
        ("regex:^Sure", "I am sure", "Sure thing", "b"),
        ("regex:a|b", "xa", "xb", "tie"),
        # starts-with: after leading blanks, any case
        ("starts-with:Sure", "  sure, here it is", "Here: sure", "a"),
        ("starts-with:Sure", "Yes", "SURE", "b"),
        ("starts-with:Sure", "Sure.", "Sure!", "tie"),
        # max-words: a tie once both comply, fewer words otherwise
        ("max-words:3", "one two", "one two three", "tie"),
        ("max-words:3", "one two three four", "one two", "b"),
        ("max-words:3", "a b c d e", "a b c d", "b"),
        ("max-words:3", "a b c d", "a b c d", "tie"),
        # argument-less built-ins also take "name:"
        ("shorter:", "ok", "much longer", "a"),
        ("longer", "ok", "much longer", "b"),
        ("no-lists", "- one\n- two", "plain prose", "b"),
    ],
)
def test_each_rule_decides_as_worked_out_by_hand(spec: str, a: str, b: str, verdict: str) -> None:
    assert judge(spec, a, b) == verdict


def test_cap_makes_a_sample_over_the_cap_lose_and_lets_the_inner_rule_decide_otherwise() -> None:
    spec = "cap:3:contains:please"
    # sampled token counts decide when the caller knows them
    assert judge(spec, Sample("please", 5), Sample("no", 2)) == "b"
    assert judge(spec, Sample("no", 3), Sample("please", 4)) == "a"
    assert judge(spec, Sample("no", 3), Sample("please", 3)) == "b"  # both within: inner rule
    assert judge(spec, Sample("please", 9), Sample("no", 9)) == "a"  # both over: inner rule
    assert judge(spec, Sample("no", 1), Sample("nope", 1)) == "tie"
    # plain text: words and punctuation marks stand in for tokens
    assert token_count("Hi, you.") == 4 and token_count(Sample("Hi, you.", 7)) == 7
    assert judge(spec, "please, do it", "ok") == "b"  # 4 "tokens" against 1
    assert judge("cap:2:longer", "a b", "a b c") == "a"
    assert judge("cap:10:cap:2:longer", "a b", "a b c") == "a"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("kindest", "rule 'kindest': unknown rule: use shorter, longer"),
        ("contains:", "rule 'contains:': contains:<word> needs a word"),
        ("starts-with", "rule 'starts-with': starts-with:<text> needs a text"),
        ("regex:(", "rule 'regex:(': not a valid regular expression (missing )"),
        ("regex:", "rule 'regex:': regex:<pattern> needs a pattern"),
        ("max-words:x", "rule 'max-words:x': max-words:<n> needs a whole number of at least 1"),
        ("max-words:0", "rule 'max-words:0': max-words:<n> needs a whole number of at least 1"),
        ("shorter:3", "rule 'shorter:3': shorter takes no argument"),
        ("cap:64", "rule 'cap:64': use cap:<tokens>:<rule>"),
        ("cap:x:shorter", "rule 'cap:x:shorter': cap:<tokens>:<rule> needs a whole number"),
        ("cap:64:contains:", "rule 'cap:64:contains:': inner rule 'contains:': contains:<word>"),
        ("cap:64:nope", "rule 'cap:64:nope': inner rule 'nope': unknown rule"),
        ("no.such.module", "rule 'no.such.module': No module named 'no'"),
        ("annotate.datasets.labels.AGGREGATIONS", "labels.AGGREGATIONS': not callable"),
    ],
)
def test_a_bad_rule_spec_gets_a_message_naming_the_rule(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_rule(spec)
    assert message in info.value.message


def test_a_dotted_path_names_any_callable() -> None:
    assert resolve_rule("training.services.simulation.shorter") is shorter
    assert resolve_rule("training.services.simulation:shorter") is shorter


def test_the_win_rate_counts_a_tie_as_half_a_win() -> None:
    rule = resolve_rule("contains:please")
    prompts = [[{"role": "user", "content": str(i)}] for i in range(5)]
    new = ["please", "please", "please", "no", "no"]
    old = ["no", "please", "no", "no", "please"]
    # win, tie, win, tie, loss: (2 + 0.5 * 2) / 5
    assert rule_win_rate(rule, prompts, new, old) == pytest.approx(0.6)
    # the word's rate rises from 40% to 60%: 0.5 + (0.6 - 0.4) / 2
    assert rule_win_rate(rule, prompts, new, old) == pytest.approx(0.5 + (0.6 - 0.4) / 2)


@pytest.mark.django_db
def test_simulated_annotators_cap_on_the_sampled_token_counts() -> None:
    project = ProjectFactory(overlap=1)
    prompt = PromptFactory(project=project)
    comparison = ComparisonFactory(
        project=project,
        prompt=prompt,
        # both have one "word", so only the stored token counts tell them apart
        completion_a=CompletionFactory(prompt=prompt, text="please", token_count=40),
        completion_b=CompletionFactory(prompt=prompt, text="no", token_count=3),
    )
    services.simulate_annotators(project, "cap:32:contains:please", annotators=1, noise=0.0)
    assert Judgment.objects.get(comparison=comparison).choice == Judgment.Choice.B


@pytest.mark.django_db
def test_the_commands_stop_on_a_bad_rule_naming_it() -> None:
    project = ProjectFactory()
    with pytest.raises(CommandError, match=r"rule 'max-words:many': max-words:<n> needs"):
        call_command("simulate_annotators", project.slug, "--rule", "max-words:many")
    with pytest.raises(CommandError, match=r"rule 'cap:10': use cap:<tokens>:<rule>"):
        call_command("run_rounds", project.slug, "--simulate", "cap:10")
