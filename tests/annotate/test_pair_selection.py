"""Active pair selection: each strategy's queue order through ``next_assignment``, the figures
kept on the comparisons, and the setting through the API and the settings form."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from annotate import services
from annotate.models import Assignment, Comparison, Judgment, Project
from annotate.selection import refresh_prompts
from tests.conftest import api_for
from tests.factories import ComparisonFactory, MembershipFactory, PromptFactory, UserFactory


def _served_in_order(project: Project, n: int) -> list[int]:
    """The pairs handed to ``n`` fresh annotators one after the other (overlap 1)."""
    out = []
    for i in range(n):
        user = UserFactory(username=f"annotator-{i}")
        MembershipFactory(project=project, user=user)
        out.append(services.next_assignment(project, user).comparison_id)
    return out


def _pairs(team, n):
    return [ComparisonFactory(project=team.project) for _ in range(n)]


def test_random_follows_the_key_drawn_at_creation_not_the_id(team):
    pairs = _pairs(team, 4)
    for pair, key in zip(pairs, (0.7, 0.1, 0.9, 0.4), strict=True):
        Comparison.objects.filter(pk=pair.pk).update(random_key=key)
    assert team.project.pair_selection == "random"
    assert _served_in_order(team.project, 4) == [pairs[i].pk for i in (1, 3, 0, 2)]


def test_new_comparisons_draw_distinct_random_keys(team):
    project = team.project
    prompt = PromptFactory(project=project)
    made = [
        Comparison.objects.create(
            project=project,
            prompt=prompt,
            completion_a=ComparisonFactory(project=project).completion_a,
            completion_b=ComparisonFactory(project=project).completion_b,
        )
        for _ in range(5)
    ]
    keys = {c.random_key for c in made}
    assert len(keys) == 5 and all(0.0 <= k < 1.0 for k in keys)


def test_uncertainty_serves_the_margin_nearest_zero_first_and_unscored_last(team):
    team.project.pair_selection = "uncertainty"
    team.project.save()
    pairs = _pairs(team, 5)
    for pair, margin in zip(pairs, (2.5, -0.2, None, 0.05, -1.0), strict=True):
        Comparison.objects.filter(pk=pair.pk).update(policy_margin=margin)
    assert _served_in_order(team.project, 5) == [pairs[i].pk for i in (3, 1, 4, 0, 2)]


def test_disagreement_serves_the_most_disputed_prompts_first(team):
    team.project.pair_selection = "disagreement"
    team.project.save()
    pairs = _pairs(team, 3)
    for pair, score in zip(pairs, (0.1, 0.5, 0.0), strict=True):
        Comparison.objects.filter(pk=pair.pk).update(prompt_disagreement=score)
    assert _served_in_order(team.project, 3) == [pairs[i].pk for i in (1, 0, 2)]


def test_coverage_serves_the_prompts_with_fewest_judged_pairs_first(team):
    team.project.pair_selection = "coverage"
    team.project.save()
    pairs = _pairs(team, 3)
    for pair, judged in zip(pairs, (2, 0, 1), strict=True):
        Comparison.objects.filter(pk=pair.pk).update(prompt_judged_pairs=judged)
    assert _served_in_order(team.project, 3) == [pairs[i].pk for i in (1, 2, 0)]


def test_the_newest_round_still_comes_first_under_every_strategy(team):
    for strategy in ("uncertainty", "disagreement", "coverage", "random"):
        Comparison.objects.filter(project=team.project).delete()
        team.project.pair_selection = strategy
        team.project.save()
        old, new = _pairs(team, 2)
        Comparison.objects.filter(pk=old.pk).update(
            round=1, policy_margin=0.0, prompt_disagreement=1.0, random_key=0.0
        )
        Comparison.objects.filter(pk=new.pk).update(
            round=2, policy_margin=9.0, prompt_judged_pairs=5, random_key=0.9
        )
        user = UserFactory(username=f"first-{strategy}")
        MembershipFactory(project=team.project, user=user)
        assert services.next_assignment(team.project, user).comparison_id == new.pk, strategy


def test_judgments_and_undo_keep_the_prompt_figures_on_every_pair_of_the_prompt(team):
    team.project.overlap = 2
    team.project.save()
    prompt = PromptFactory(project=team.project)
    first = ComparisonFactory(project=team.project, prompt=prompt)
    second = ComparisonFactory(project=team.project, prompt=prompt)
    data = services.JudgmentInput

    for user, choice in ((team.alice, "left"), (team.bob, "right")):
        lease = services.next_assignment(team.project, user)
        assert lease.comparison_id == first.pk
        left_is_a = lease.left_is_a
        want = choice if left_is_a else ("right" if choice == "left" else "left")
        services.submit_judgment(user, first.pk, data(choice=want, client_id=uuid.uuid4()))
    for row in (first, second):
        row.refresh_from_db()
        assert (row.prompt_disagreement, row.prompt_judged_pairs) == (0.5, 1)

    services.undo_judgment(team.bob, project=team.project)
    for row in (first, second):
        row.refresh_from_db()
        assert (row.prompt_disagreement, row.prompt_judged_pairs) == (0.0, 1)


def test_each_submit_leaves_the_figures_and_counts_a_full_refresh_computes(team):
    """A submit counts the judgment and refreshes its prompt's figures in the statement that
    stores it (on PostgreSQL, where that statement cannot see its own row): the figures match
    a refresh from the stored judgments after every submit, hidden repeats' votes left out."""
    project = team.project
    project.overlap = 4
    project.save()
    prompt = PromptFactory(project=project)
    pairs = [ComparisonFactory(project=project, prompt=prompt) for _ in range(3)]
    users = [UserFactory() for _ in range(4)]
    for user in users:
        MembershipFactory(project=project, user=user)
    repeat = ComparisonFactory(project=project, prompt=prompt, kind="repeat", repeat_for=users[0])
    votes = [
        (0, pairs[0], "left"), (1, pairs[0], "right"), (2, pairs[0], "left"),
        (0, pairs[1], "tie"), (0, repeat, "right"), (1, pairs[1], "tie"),
        (3, pairs[0], "right"), (2, pairs[2], "left"),
    ]  # fmt: skip
    for user, pair, choice in votes:
        Assignment.objects.create(
            comparison=pair,
            annotator=users[user],
            project=project,
            left_is_a=True,
            lease_expires=timezone.now() + timedelta(hours=1),
        )
        services.submit_judgment(
            users[user], pair.pk, services.JudgmentInput(choice=choice, client_id=uuid.uuid4())
        )
        stored = lambda: list(  # noqa: E731
            Comparison.objects.filter(prompt=prompt)
            .order_by("pk")
            .values_list("pk", "judgment_count", "prompt_disagreement", "prompt_judged_pairs")
        )
        after_submit = stored()
        refresh_prompts([prompt.pk])
        assert stored() == after_submit
        for pk, count, *_ in after_submit:
            assert count == Judgment.objects.filter(comparison_id=pk).count()
    # pair 0: a, b, a, b disagrees by 1/2; pair 1: tie, tie by 0; pair 2 has one judgment
    assert after_submit[0][2:] == (0.25, 3)


def _judged(prompt, *choices_per_pair, kind="train"):
    """Pairs of ``prompt`` with these choices, each from its own user."""
    pairs = []
    for choices in choices_per_pair:
        pair = ComparisonFactory(project=prompt.project, prompt=prompt, kind=kind)
        for choice in choices:
            Judgment.objects.create(
                comparison=pair,
                project=prompt.project,
                annotator=UserFactory(),
                choice=choice,
                left_is_a=True,
            )
        pairs.append(pair)
    return pairs


def test_the_figures_on_small_cases(team):
    figures = lambda pair: (pair.prompt_disagreement, pair.prompt_judged_pairs)  # noqa: E731
    prompt = PromptFactory(project=team.project)
    pairs = _judged(prompt, ["a", "b"], ["a", "a", "a"], [])
    # a hidden repeat's judgments are not the prompt's
    _judged(prompt, ["a", "b", "tie"], kind="repeat")
    four = PromptFactory(project=team.project)
    (four_pair,) = _judged(four, ["a", "a", "b", "tie"])
    single = PromptFactory(project=team.project)
    (single_pair,) = _judged(single, ["a"])
    empty = PromptFactory(project=team.project)
    (empty_pair,) = _judged(empty, [])

    refresh_prompts([prompt.pk, four.pk, single.pk, empty.pk])

    for pair in pairs:
        pair.refresh_from_db()
        # pair 1 disagrees by 1/2, pair 2 by 0, pair 3 has no judgment
        assert figures(pair) == (0.25, 2)
    for pair, expected in ((four_pair, (0.5, 1)), (single_pair, (0.0, 1)), (empty_pair, (0.0, 0))):
        pair.refresh_from_db()
        assert figures(pair) == expected


def test_the_strategy_is_patched_and_a_bad_one_answers_400_naming_the_field(team):
    lead = api_for(team.lead)
    url = f"/api/projects/{team.project.pk}/"
    r = lead.patch(url, {"pair_selection": "coverage"}, format="json")
    assert r.status_code == 200 and r.json()["pair_selection"] == "coverage"
    r = lead.patch(url, {"pair_selection": "smartest"}, format="json")
    assert r.status_code == 400 and "pair_selection" in r.json(), r.json()
    team.project.refresh_from_db()
    assert team.project.pair_selection == "coverage"
    assert lead.get(url).json()["pair_selection"] == "coverage"
    r = api_for(team.alice).patch(url, {"pair_selection": "random"}, format="json")
    assert r.status_code == 403


def test_the_settings_form_saves_the_strategy_and_keeps_it_when_left_out(team):
    client = Client()
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/settings/"
    assert 'name="pair_selection"' in client.get(url).content.decode()
    base = {"name": "Team project", "overlap": 1, "rationale": "off", "lease_seconds": 600}
    base["undo_seconds"] = 60
    assert client.post(url, {**base, "pair_selection": "disagreement"}).status_code == 302
    team.project.refresh_from_db()
    assert team.project.pair_selection == "disagreement"
    assert client.post(url, base).status_code == 302
    team.project.refresh_from_db()
    assert team.project.pair_selection == "disagreement"
    r = client.post(url, {**base, "pair_selection": "smartest"})
    assert r.status_code == 200 and "pair_selection" in r.content.decode()
    team.project.refresh_from_db()
    assert team.project.pair_selection == "disagreement"
