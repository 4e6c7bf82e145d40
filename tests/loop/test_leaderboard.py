"""The leaderboard: Bradley-Terry ratings of versions from people's eval judgments."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotate.models import Comparison, Completion, Judgment, Prompt
from tests.conftest import Team, api_for
from tests.factories import ComparisonFactory, CompletionFactory, PromptFactory, UserFactory
from training import services
from training.core.stats import Game, bootstrap_bradley_terry
from training.models import ModelVersion


class Versions:
    def __init__(self, team: Team) -> None:
        self.base = services.base_version(team.project)
        self.v1 = ModelVersion.objects.create(
            project=team.project, number=1, spec="v1", parent=self.base
        )
        self.v2 = ModelVersion.objects.create(
            project=team.project, number=2, spec="v2", parent=self.v1
        )


def _eval(team: Team, prompt: Prompt, a: ModelVersion, b: ModelVersion) -> Comparison:
    comparison: Comparison = ComparisonFactory(
        project=team.project,
        prompt=prompt,
        kind=Comparison.Kind.EVAL,
        round=a.number,
        completion_a=CompletionFactory(
            prompt=prompt, source=Completion.Source.MODEL, model_version_id=a.pk
        ),
        completion_b=CompletionFactory(
            prompt=prompt, source=Completion.Source.MODEL, model_version_id=b.pk
        ),
    )
    return comparison


def _judge(team: Team, comparison: Comparison, choice: str, who: Any, **fields: Any) -> None:
    Judgment.objects.create(
        comparison=comparison,
        project=team.project,
        annotator=who,
        choice=choice,
        left_is_a=True,
        **fields,
    )


@pytest.fixture
def judged(team: Team) -> Versions:
    """A fixed set of eval judgments on three prompts.

    v1 (side a) against the base: prompt 1 won by v1 twice (alice, bob), prompt 2 won once and
    tied once, prompt 3 lost once; a simulated annotator's loss on prompt 3 is left out.
    v2 against v1 (v1 on side a, v2 on side b): prompt 1 won by v2, prompt 2 both bad.
    """
    versions = Versions(team)
    p1, p2, p3 = (PromptFactory(project=team.project) for _ in range(3))
    base, v1, v2 = versions.base, versions.v1, versions.v2
    c1 = _eval(team, p1, v1, base)
    _judge(team, c1, "a", team.alice)
    _judge(team, c1, "a", team.bob)
    c2 = _eval(team, p2, v1, base)
    _judge(team, c2, "a", team.alice)
    c3 = _eval(team, p2, v1, base)
    _judge(team, c3, "tie", team.bob)
    c4 = _eval(team, p3, v1, base)
    _judge(team, c4, "b", team.alice)
    robot = UserFactory(username="sim-robot")
    _judge(team, c4, "b", robot, source=Judgment.Source.SIMULATED)
    c5 = _eval(team, p1, v1, v2)
    _judge(team, c5, "b", team.alice)
    c6 = _eval(team, p2, v1, v2)
    _judge(team, c6, "both_bad", team.bob)
    # not an eval comparison: never rated
    train = ComparisonFactory(project=team.project, kind=Comparison.Kind.TRAIN)
    _judge(team, train, "a", team.alice)
    return versions


def test_it_rates_versions_from_eval_judgments(team: Team, judged: Versions) -> None:
    r = api_for(team.alice).get(f"/api/projects/{team.project.pk}/leaderboard/")
    assert r.status_code == 200
    rows = r.json()["versions"]
    assert [row["version"] for row in rows] == ["base", "v1", "v2"]
    assert [row["comparisons"] for row in rows] == [4, 6, 2]
    # the same games written out by hand: (first, second, first's score, prompt)
    p1, p2, p3 = Prompt.objects.filter(project=team.project).order_by("pk")[:3]
    games = [
        Game("v1", "base", 1.0, p1.pk),
        Game("v1", "base", 1.0, p1.pk),
        Game("v1", "base", 1.0, p2.pk),
        Game("v1", "base", 0.5, p2.pk),
        Game("v1", "base", 0.0, p3.pk),
        Game("v1", "v2", 0.0, p1.pk),
        Game("v1", "v2", 0.5, p2.pk),
    ]
    expected = bootstrap_bradley_terry(games, players=["base", "v1", "v2"], anchor="base")
    for row, rating in zip(rows, expected, strict=True):
        assert row["rating"] == round(rating.rating, 1)
        assert row["ci95"] == [round(rating.low, 1), round(rating.high, 1)]
    base, v1, v2 = rows
    assert base["rating"] == 1000.0 and base["ci95"] == [1000.0, 1000.0]
    # v1 scores 3.5 of 5 against the base, v2 1.5 of 2 against v1
    assert 1000.0 < v1["rating"] < v2["rating"]
    assert v1["ci95"][0] <= v1["rating"] <= v1["ci95"][1]


def test_it_rates_an_even_record_at_the_base(team: Team) -> None:
    versions = Versions(team)
    prompts = [PromptFactory(project=team.project) for _ in range(4)]
    for prompt, choice in zip(prompts, ["a", "b", "a", "b"], strict=True):
        _judge(team, _eval(team, prompt, versions.v1, versions.base), choice, team.alice)
    rows = api_for(team.alice).get(f"/api/projects/{team.project.pk}/leaderboard/").json()
    v1 = rows["versions"][1]
    # two wins and two losses: by symmetry, exactly the base's rating
    assert (v1["version"], v1["rating"], v1["comparisons"]) == ("v1", 1000.0, 4)
    low, high = v1["ci95"]
    assert low < 1000.0 < high


def test_it_is_empty_without_judged_eval_comparisons(team: Team) -> None:
    r = api_for(team.lead).get(f"/api/projects/{team.project.pk}/leaderboard/")
    assert r.status_code == 200 and r.json() == {"versions": []}


def test_it_shows_the_leaderboard_to_members_only(team: Team, judged: Versions) -> None:
    url = f"/api/projects/{team.project.pk}/leaderboard/"
    assert api_for(team.bob).get(url).status_code == 200
    assert api_for(team.outsider).get(url).status_code == 404
    assert APIClient().get(url).status_code in (401, 403)


def test_it_documents_the_leaderboard_in_the_schema(team: Team) -> None:
    schema = api_for(team.lead).get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/projects/{project_id}/leaderboard/"]["get"]
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/Leaderboard")
    entry = schema["components"]["schemas"]["LeaderboardEntry"]
    assert set(entry["properties"]) == {"version", "rating", "ci95", "comparisons"}


def test_it_shows_the_leaderboard_on_the_loop_page(team: Team, judged: Versions) -> None:
    client = Client()
    client.force_login(team.lead)
    page = client.get(f"/projects/{team.project.pk}/loop/").content.decode()
    table = page.split('id="leaderboard-table"', 1)[1].split("</table>", 1)[0]
    assert [cell.split("</td>")[0] for cell in table.split("<tr><td>")[1:]] == [
        "base",
        "v1",
        "v2",
    ]
    assert "Leaderboard: rating with 95% interval" in page
