from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate import services
from annotate.errors import Conflict, InvalidInput, LeaseExpired, NotAllowed, NotFound
from annotate.models import Assignment, Comparison, Judgment, Project

from ..factories import ComparisonFactory


def judge(user, comparison_id, choice="left", **kw):
    data = services.JudgmentInput(choice=choice, client_id=kw.pop("client_id", uuid.uuid4()), **kw)
    return services.submit_judgment(user, comparison_id, data)


def test_it_leases_each_pair_to_overlap_annotators(team):
    team.project.overlap = 2
    team.project.save()
    (pair,) = team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    b = services.next_assignment(team.project, team.bob)
    assert a.comparison_id == b.comparison_id == pair.pk
    # Both slots are leased: the lead gets nothing.
    assert services.next_assignment(team.project, team.lead) is None


def test_it_gives_the_same_lease_back_until_judged(team):
    team.pairs(3)
    first = services.next_assignment(team.project, team.alice)
    again = services.next_assignment(team.project, team.alice)
    assert first.pk == again.pk
    judge(team.alice, first.comparison_id)
    nxt = services.next_assignment(team.project, team.alice)
    assert nxt.comparison_id != first.comparison_id


def test_it_never_offers_a_judged_pair_again(team):
    team.project.overlap = 3
    team.project.save()
    (pair,) = team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    judge(team.alice, a.comparison_id)
    assert services.next_assignment(team.project, team.alice) is None
    pair.refresh_from_db()
    assert pair.judgment_count == 1


def test_it_returns_expired_leases_to_the_pool(team):
    (pair,) = team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    assert services.next_assignment(team.project, team.bob) is None
    Assignment.objects.filter(pk=a.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    b = services.next_assignment(team.project, team.bob)
    assert b is not None and b.comparison_id == pair.pk


def test_it_refuses_a_judgment_on_an_expired_lease(team):
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    Assignment.objects.filter(pk=a.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    with pytest.raises(LeaseExpired):
        judge(team.alice, a.comparison_id)
    assert Judgment.objects.count() == 0


def test_it_marks_expired_leases_in_the_periodic_task(team):
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    Assignment.objects.filter(pk=a.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert services.release_expired_leases() == 1
    a.refresh_from_db()
    assert a.status == Assignment.Status.EXPIRED
    with pytest.raises(LeaseExpired):
        judge(team.alice, a.comparison_id)
    # The same annotator can lease it again, in the order first drawn.
    again = services.next_assignment(team.project, team.alice)
    assert again.pk == a.pk and again.left_is_a == a.left_is_a


def test_it_refuses_a_judgment_without_a_lease(team):
    (pair,) = team.pairs(1)
    with pytest.raises(NotAllowed):
        judge(team.alice, pair.pk)


def test_it_hides_other_projects_pairs(team):
    foreign = ComparisonFactory()
    with pytest.raises(NotFound):
        judge(team.alice, foreign.pk)


def test_it_is_idempotent_on_client_id(team):
    team.pairs(2)
    a = services.next_assignment(team.project, team.alice)
    cid = uuid.uuid4()
    first, created = judge(team.alice, a.comparison_id, client_id=cid)
    replay, created_again = judge(team.alice, a.comparison_id, client_id=cid)
    assert created and not created_again
    assert replay.pk == first.pk and replay.choice == first.choice
    with pytest.raises(Conflict):
        judge(team.alice, a.comparison_id, "right", client_id=cid)
    assert Judgment.objects.count() == 1
    assert Comparison.objects.get(pk=a.comparison_id).judgment_count == 1


def test_it_refuses_a_client_id_reused_by_someone_else(team):
    team.project.overlap = 2
    team.project.save()
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    b = services.next_assignment(team.project, team.bob)
    cid = uuid.uuid4()
    judge(team.alice, a.comparison_id, client_id=cid)
    with pytest.raises(Conflict):
        judge(team.bob, b.comparison_id, client_id=cid)


@pytest.mark.parametrize(("left_is_a", "shown", "stored"), [
    (True, "left", "a"), (True, "right", "b"), (False, "left", "b"), (False, "right", "a"),
    (False, "tie", "tie"), (True, "both_bad", "both_bad"),
])  # fmt: skip
def test_it_stores_choices_in_canonical_order(team, left_is_a, shown, stored):
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    Assignment.objects.filter(pk=a.pk).update(left_is_a=left_is_a)
    judgment, _ = judge(team.alice, a.comparison_id, shown)
    assert judgment.choice == stored
    assert judgment.left_is_a is left_is_a
    assert judgment.shown_choice == shown


def test_it_randomises_the_shown_order(team):
    team.project.overlap = 1
    team.project.save()
    team.pairs(40)
    orders = set()
    for _ in range(40):
        a = services.next_assignment(team.project, team.alice)
        orders.add(a.left_is_a)
        judge(team.alice, a.comparison_id, "tie")
    assert orders == {True, False}


def test_it_validates_strength_and_rationale(team):
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    with pytest.raises(InvalidInput, match="strength"):
        judge(team.alice, a.comparison_id, strength=2)
    with pytest.raises(InvalidInput, match="rationale"):
        judge(team.alice, a.comparison_id, rationale="because")
    team.project.show_strength = True
    team.project.rationale = Project.Rationale.REQUIRED
    team.project.save()
    with pytest.raises(InvalidInput, match="rationale"):
        judge(team.alice, a.comparison_id, strength=2, rationale="  ")
    with pytest.raises(InvalidInput, match="strength"):
        judge(team.alice, a.comparison_id, strength=7, rationale="x")
    judgment, _ = judge(team.alice, a.comparison_id, strength=3, rationale="clearer")
    assert (judgment.strength, judgment.rationale) == (3, "clearer")


def test_it_drops_strength_on_a_tie(team):
    team.project.show_strength = True
    team.project.save()
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    judgment, _ = judge(team.alice, a.comparison_id, "tie", strength=2)
    assert judgment.strength is None


def test_it_skips_a_pair_for_that_annotator_only(team):
    (pair,) = team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    services.skip(team.project, team.alice, a.comparison_id)
    assert services.next_assignment(team.project, team.bob).comparison_id == pair.pk
    # Bob holds the only slot now: the pair would come back to Alice, but it is taken.
    assert services.next_assignment(team.project, team.alice) is None


def test_it_undoes_the_last_judgment_and_shows_its_pair_again(team):
    team.pairs(3)
    first = services.next_assignment(team.project, team.alice)
    judge(team.alice, first.comparison_id)
    second = services.next_assignment(team.project, team.alice)
    assert second.comparison_id != first.comparison_id
    renewed = services.undo_judgment(team.alice, project=team.project)
    assert renewed.comparison_id == first.comparison_id
    assert Judgment.objects.count() == 0
    assert Comparison.objects.get(pk=first.comparison_id).judgment_count == 0
    assert services.next_assignment(team.project, team.alice).comparison_id == first.comparison_id
    # The pair handed out in between is free again for others.
    assert Assignment.objects.get(pk=second.pk).status == Assignment.Status.EXPIRED


def test_it_refuses_undo_after_the_window(team):
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    judgment, _ = judge(team.alice, a.comparison_id)
    Judgment.objects.filter(pk=judgment.pk).update(
        created_at=timezone.now() - timedelta(seconds=61)
    )
    with pytest.raises(Conflict):
        services.undo_judgment(team.alice, project=team.project)
    assert Judgment.objects.count() == 1


def test_it_refuses_undo_of_someone_elses_judgment(team):
    team.pairs(1)
    a = services.next_assignment(team.project, team.alice)
    judgment, _ = judge(team.alice, a.comparison_id)
    with pytest.raises(NotFound):
        services.undo_judgment(team.bob, judgment_id=judgment.pk)


def test_it_only_undoes_the_latest_judgment(team):
    team.pairs(2)
    first = services.next_assignment(team.project, team.alice)
    j1, _ = judge(team.alice, first.comparison_id)
    second = services.next_assignment(team.project, team.alice)
    judge(team.alice, second.comparison_id)
    with pytest.raises(Conflict):
        services.undo_judgment(team.alice, judgment_id=j1.pk)


def test_database_forbids_two_judgments_by_one_annotator(team):
    (pair,) = team.pairs(1)
    common = dict(
        comparison=pair, annotator=team.alice, project=team.project, choice="a", left_is_a=True
    )
    Judgment.objects.create(**common)
    with pytest.raises(IntegrityError), transaction.atomic():
        Judgment.objects.create(**common)


def test_it_reports_progress(team):
    team.project.overlap = 2
    team.project.save()
    team.pairs(3)
    a = services.next_assignment(team.project, team.alice)
    judge(team.alice, a.comparison_id)
    p = services.progress(team.project, team.alice)
    assert (p.mine_done, p.mine_remaining, p.project_done, p.project_total) == (1, 2, 1, 6)
    assert services.progress(team.project, team.bob).mine_remaining == 3


def test_it_only_lets_leads_manage_projects(team):
    with pytest.raises(NotAllowed):
        services.get_project(team.alice, team.project.pk, lead=True)
    with pytest.raises(NotFound):
        services.get_project(team.outsider, team.project.pk)
    assert services.get_project(team.lead, team.project.pk, lead=True) == team.project


def test_it_makes_the_creator_lead(team):
    project = services.create_project(team.lead, name="Fresh", overlap=2)
    assert project.role_of(team.lead) == "lead"
    assert project.slug == "fresh"
    with pytest.raises(NotAllowed):
        services.create_project(team.alice, name="Nope")


def test_it_lets_a_lead_update_a_project(team):
    services.update_project(team.lead, team.project, {"name": "Renamed", "overlap": 2})
    team.project.refresh_from_db()
    assert (team.project.name, team.project.overlap) == ("Renamed", 2)
    assert team.project.slug == "team-project"


def test_it_keeps_project_updates_from_annotators_and_outsiders(team):
    with pytest.raises(NotAllowed):
        services.update_project(team.alice, team.project, {"overlap": 2})
    with pytest.raises(NotFound):
        services.update_project(team.outsider, team.project, {"overlap": 2})
    team.project.refresh_from_db()
    assert team.project.overlap == 1


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"name": "Renamed", "overlap": 0}, "overlap"),
        ({"name": "Renamed", "lease_seconds": 1}, "lease_seconds"),
        ({"name": "Renamed", "rationale": "sometimes"}, "rationale"),
        ({"name": "Renamed", "slug": "mine"}, "slug"),
    ],
)
def test_it_rejects_an_invalid_project_update_and_saves_nothing(team, changes, named):
    with pytest.raises(InvalidInput, match=named):
        services.update_project(team.lead, team.project, changes)
    assert team.project.name == "Team project"
    team.project.refresh_from_db()
    assert (team.project.name, team.project.overlap, team.project.slug) == (
        "Team project",
        1,
        "team-project",
    )


def test_it_adds_and_changes_members(team):
    membership = services.add_member(team.project, "mallory", "annotator")
    assert membership.role == "annotator"
    assert services.add_member(team.project, "mallory", "lead").role == "lead"
    with pytest.raises(InvalidInput, match="ghost"):
        services.add_member(team.project, "ghost", "annotator")
    with pytest.raises(InvalidInput, match="role"):
        services.add_member(team.project, "mallory", "boss")


def test_it_serves_the_latest_rounds_pairs_first(team):
    imported = ComparisonFactory(project=team.project)
    old = ComparisonFactory(project=team.project, round=1)
    latest = ComparisonFactory(project=team.project, round=2)
    order = []
    for _ in range(3):
        a = services.next_assignment(team.project, team.alice)
        order.append(a.comparison_id)
        judge(team.alice, a.comparison_id)
    assert order == [latest.pk, old.pk, imported.pk]
