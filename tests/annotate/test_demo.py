from __future__ import annotations

from django.core.management import call_command

from annotate.demo import DEMO_SLUG, DEMO_USERS
from annotate.models import Comparison, Judgment, Membership, Project, Prompt


def test_seed_demo_is_idempotent(db, capsys):
    call_command("seed_demo")
    project = Project.objects.get(slug=DEMO_SLUG)
    counts = (Prompt.objects.count(), Comparison.objects.count(), Membership.objects.count())
    # three demo users and the four members of the simulated past team
    assert counts[0] >= 300 and counts[1] >= 200 and counts[2] == 3 + 4
    seeded = Judgment.objects.count()
    out = capsys.readouterr().out
    for user in DEMO_USERS:
        assert f"{user.username} / {user.password}" in out
    # Some work happens, then the command runs again: nothing duplicated or lost.
    lead = project.memberships.get(role="lead").user
    Judgment.objects.create(
        comparison=Comparison.objects.first(),
        annotator=lead,
        project=project,
        choice="a",
        left_is_a=True,
    )
    call_command("seed_demo")
    assert (
        Prompt.objects.count(),
        Comparison.objects.count(),
        Membership.objects.count(),
    ) == counts
    assert Judgment.objects.count() == seeded + 1
    assert "already present" in capsys.readouterr().out


def test_demo_users_can_log_in(db, client):
    call_command("seed_demo")
    for user in DEMO_USERS:
        assert client.login(username=user.username, password=user.password)
    assert (
        Project.objects.get(slug=DEMO_SLUG).role_of(client.session and _user("alice"))
        == "annotator"
    )


def _user(username):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def test_demo_multi_turn_prompts_survive(db):
    call_command("seed_demo")
    multi = [p for p in Prompt.objects.all() if len(p.messages) > 1]
    assert multi, "the demo set has multi-turn chats"
    assert all(p.messages[-1]["role"] == "user" for p in multi)


def test_demo_quality_page_has_figures_that_reveal_each_habit(db):
    """The seeded team's habits show in the quality report the lead sees after `make run`."""
    from annotate.demo_team import GOLD, PAIR_ANSWERS, REPEATS, TEAM
    from annotate.quality.report import quality_report

    call_command("seed_demo")
    project = Project.objects.get(slug=DEMO_SLUG)
    gold = Comparison.objects.filter(project=project, kind="gold")
    assert gold.count() == len(GOLD)
    assert {c.gold_choice for c in gold} <= set(PAIR_ANSWERS)
    judged = Judgment.objects.filter(project=project)
    assert judged.count() == (
        2 * (len(PAIR_ANSWERS) - len(GOLD)) + len(TEAM) * len(GOLD) + len(TEAM) * REPEATS
    )
    assert set(judged.values_list("source", flat=True)) == {"simulated"}
    # no training round reads them, and alice and bob still have the other pairs to judge
    assert not Comparison.objects.filter(pk__in=judged.values("comparison"), round__isnull=False)
    assert Comparison.objects.filter(project=project, judgment_count=0).count() >= 200

    frank = project.memberships.get(user__username="frank")
    assert frank.paused and "gold" in frank.paused_reason
    assert not project.memberships.get(user__username="carol").paused

    # the lead's pages count the pairs, not the hidden repeats
    from django.test import Client

    client = Client()
    client.force_login(project.memberships.get(role="lead").user)
    pairs = Comparison.objects.filter(project=project).exclude(kind="repeat").count()
    assert Comparison.objects.filter(project=project, kind="repeat").exists()
    page = client.get(f"/projects/{project.pk}/datasets/").content.decode()
    assert f"{pairs} pairs" in page

    report = quality_report(project)
    rows = {row["username"]: row for row in report["annotators"]}
    assert report["agreement"]["items"] == len(PAIR_ANSWERS)
    assert all(row["items"] > 0 for row in report["agreement"]["cohen_kappa"])
    assert rows["dan"]["left_rate"] > 0.75 and rows["dan"]["left_p_value"] < 0.01
    assert rows["carol"]["left_p_value"] > 0.05
    assert rows["erin"]["fast_judgments"] == rows["erin"]["judgments"]
    assert rows["carol"]["fast_judgments"] == 0
    assert rows["erin"]["longer_win_rate"] > rows["carol"]["longer_win_rate"] - 0.05
    assert rows["frank"]["gold_accuracy"] < project.gold_min_accuracy
    assert rows["carol"]["gold_accuracy"] >= project.gold_min_accuracy
    assert rows["frank"]["paused"] and not rows["carol"]["paused"]
    # hidden repeats: random frank flips, careful carol does not
    assert all(rows[name]["repeats"] == REPEATS for name in TEAM)
    assert rows["carol"]["flip_rate"] == 0.0
    assert rows["frank"]["flip_rate"] > 0.5 and rows["frank"]["flip_items"] >= 3
