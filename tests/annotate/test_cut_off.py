"""Annotators see which completion the token budget cut off, on the page and in the API."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from annotate.models import Assignment, Comparison, Completion
from tests.conftest import api_for

MARK = "Cut off: the reply stops at the length limit"


def _pair(team: Any, a_finished: bool | None, b_finished: bool | None) -> Comparison:
    (pair,) = team.pairs(1)
    Completion.objects.filter(pk=pair.completion_a_id).update(finished=a_finished)
    Completion.objects.filter(pk=pair.completion_b_id).update(finished=b_finished)
    return pair


def _shown(pair: Comparison, user: Any) -> tuple[str, str]:
    """Which side (left/right) shows completion A and which B, for this annotator."""
    left_is_a = Assignment.objects.get(comparison=pair, annotator=user).left_is_a
    return ("left", "right") if left_is_a else ("right", "left")


def _article(html: str, side: str) -> str:
    match = re.search(rf'<article class="completion" id="{side}".*?</article>', html, re.S)
    assert match is not None
    return match.group(0)


def test_the_page_marks_the_cut_off_completion_in_words(team: Any) -> None:
    pair = _pair(team, a_finished=False, b_finished=True)
    client = Client()
    client.force_login(team.alice)
    html = client.get(f"/projects/{team.project.pk}/annotate/").content.decode()
    side_a, side_b = _shown(pair, team.alice)
    cut, whole = _article(html, side_a), _article(html, side_b)
    assert MARK in cut and "(cut off here)" in cut
    assert f'aria-describedby="{side_a}-cut-off"' in cut
    assert "Cut off" not in whole and "cut off here" not in whole
    assert html.count(MARK) == 1


@pytest.mark.parametrize("finished", [True, None])
def test_finished_or_unknown_completions_carry_no_mark(team: Any, finished: bool | None) -> None:
    _pair(team, a_finished=finished, b_finished=finished)
    client = Client()
    client.force_login(team.alice)
    html = client.get(f"/projects/{team.project.pk}/annotate/").content.decode()
    assert "Cut off" not in html


def test_the_htmx_partial_carries_the_mark(team: Any) -> None:
    _pair(team, a_finished=False, b_finished=False)
    client = Client()
    client.force_login(team.alice)
    html = client.get(
        f"/projects/{team.project.pk}/annotate/", HTTP_HX_REQUEST="true"
    ).content.decode()
    assert '<section id="task"' in html and html.count(MARK) == 2


def test_the_api_task_says_whether_each_side_finished(team: Any) -> None:
    pair = _pair(team, a_finished=False, b_finished=None)
    body = api_for(team.alice).get(f"/api/projects/{team.project.pk}/next/").json()
    side_a, side_b = _shown(pair, team.alice)
    assert body[side_a] == {"text": pair.completion_a.text, "finished": False}
    assert body[side_b] == {"text": pair.completion_b.text, "finished": None}
