from __future__ import annotations

from django.core.management import call_command

from annotate.demo import DEMO_SLUG, DEMO_USERS
from annotate.models import Comparison, Judgment, Membership, Project, Prompt


def test_seed_demo_is_idempotent(db, capsys):
    call_command("seed_demo")
    project = Project.objects.get(slug=DEMO_SLUG)
    counts = (Prompt.objects.count(), Comparison.objects.count(), Membership.objects.count())
    assert counts[0] >= 300 and counts[1] >= 200 and counts[2] == 3
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
    assert Judgment.objects.count() == 1
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
