"""The datasets page's forms: a failed paste comes back filled in with its error beside the
box, examples follow the chosen kind, an export with no rows says so, the filters say what
nothing ticked means."""

from __future__ import annotations

import html
import re

from annotate.models import Comparison, DatasetJob, Prompt

from .conftest import vote

BAD_LINES = '{"prompt": "fine"}\n{"text": "no prompt here <b>"}\n'
EXPORT = {"format": "trl", "bundle": "file", "aggregation": "majority", "weight": "uniform"}


def _url(team) -> str:
    return f"/projects/{team.project.pk}/datasets/"


def _paste_section(body: str) -> str:
    start = body.index('id="paste"')
    return body[start : body.index("</section>", start)]


def _textarea(section: str) -> str:
    return re.search(r'<textarea name="text"[^>]*>(.*?)</textarea>', section, re.S).group(1)


def _placeholder(section: str) -> str:
    return html.unescape(re.search(r'id="paste-text"[^>]*?placeholder="([^"]*)"', section).group(1))


def test_it_keeps_the_pasted_text_and_shows_the_error_beside_the_box(client, team):
    client.force_login(team.lead)
    r = client.post(_url(team), {"kind": "prompts", "text": BAD_LINES})
    assert r.status_code == 400
    section = _paste_section(r.content.decode())
    # the lines come back as they were pasted, escaped
    assert html.unescape(_textarea(section)) == BAD_LINES
    assert "&lt;b&gt;" in _textarea(section)
    error = section[section.index('id="paste-error"') :]
    assert "Nothing was imported: line 2" in html.unescape(error)
    assert section.index('id="paste-text"') < section.index('id="paste-error"')
    assert 'aria-describedby="paste-error"' in section
    assert Prompt.objects.filter(project=team.project).count() == 0


def test_it_imports_pasted_lines_and_goes_back_to_the_page(client, team):
    client.force_login(team.lead)
    lines = '{"prompt": "a"}\n{"prompt": "b"}\n'
    r = client.post(_url(team), {"kind": "prompts", "text": lines})
    assert r.status_code == 302 and r["Location"] == _url(team)
    assert Prompt.objects.filter(project=team.project).count() == 2
    page = client.get(_url(team)).content.decode()
    assert "Imported: 2 rows read, 2 prompts added." in page
    pair = '{"prompt": "2+2?", "completion_a": "4", "completion_b": "5"}'
    r = client.post(_url(team), {"kind": "pairs", "text": pair})
    assert r.status_code == 302
    assert Comparison.objects.filter(project=team.project).count() == 1


def test_it_names_an_empty_box_or_a_bad_kind_beside_the_box(client, team):
    client.force_login(team.lead)
    r = client.post(_url(team), {"kind": "prompts", "text": "  \n"})
    assert r.status_code == 400
    assert "Paste at least one line of JSONL." in _paste_section(r.content.decode())
    r = client.post(_url(team), {"kind": "trl", "text": '{"prompt": "a"}'})
    assert r.status_code == 400
    section = _paste_section(r.content.decode())
    assert "Select a valid choice" in section and "{&quot;prompt&quot;: &quot;a&quot;}" in section


def test_its_example_follows_the_kind_with_or_without_javascript(client, team):
    client.force_login(team.lead)
    section = _paste_section(client.get(_url(team)).content.decode())
    assert _placeholder(section).startswith('{"prompt": "What is DPO?"}')
    assert "completion_a" not in _placeholder(section)
    # both examples ride along for the script that switches them
    assert 'data-placeholder-pairs="{&quot;prompt&quot;: &quot;2+2?&quot;' in section
    section = _paste_section(client.get(_url(team), {"kind": "pairs"}).content.decode())
    assert _placeholder(section) == '{"prompt": "2+2?", "completion_a": "4", "completion_b": "5"}'
    assert '<option value="pairs" selected>' in section
    # a failed paste of pairs keeps "pairs" chosen and its example
    r = client.post(_url(team), {"kind": "pairs", "text": '{"prompt": "x"}'})
    section = _paste_section(r.content.decode())
    assert '<option value="pairs" selected>' in section and "completion_a" in _placeholder(section)


def test_it_says_so_when_there_is_nothing_to_download(client, team):
    client.force_login(team.lead)
    team.pairs(2)
    url = f"/projects/{team.project.pk}/datasets/export/"
    r = client.post(url, {**EXPORT, "action": "download"})
    assert r.status_code == 200
    assert "Content-Disposition" not in r
    body = r.content.decode()
    assert 'id="export-empty"' in body and "no pair of this project has been judged" in body
    r = client.post(url, {**EXPORT, "action": "background"})
    assert "no pair of this project has been judged" in r.content.decode()
    assert not DatasetJob.objects.exists()


def test_it_says_so_when_the_filters_leave_nothing(client, team):
    pair = team.pairs(1)[0]
    vote(pair, "tie", team.alice)
    client.force_login(team.lead)
    url = f"/projects/{team.project.pk}/datasets/export/"
    r = client.post(url, {**EXPORT, "action": "download"})
    assert "Content-Disposition" not in r
    assert "no judged pair matches these options" in r.content.decode()
    # the options stay as they were sent
    r = client.post(url, {**EXPORT, "action": "download", "splits": ["dev"]})
    assert re.search(r'value="dev"[^>]*checked', r.content.decode())
    r = client.post(url, {**EXPORT, "action": "download", "include_ties": "on"})
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]


def test_it_says_what_nothing_ticked_and_the_defaults_export(client, team):
    client.force_login(team.lead)
    body = client.get(_url(team)).content.decode()
    export = body[body.index('id="export"') : body.index('id="paste"')]
    assert "None ticked means train: eval and dev prompts measure versions." in export
    assert "None ticked means every kind but eval" in export
    defaults = export[export.index('id="export-defaults"') :]
    assert "every judged train and gold pair" in defaults and "Eval pairs" in defaults


def test_it_keeps_pasting_from_annotators_and_outsiders(client, team):
    for user, status in ((team.alice, 403), (team.outsider, 404)):
        client.force_login(user)
        r = client.post(_url(team), {"kind": "prompts", "text": '{"prompt": "a"}'})
        assert r.status_code == status
    assert Prompt.objects.filter(project=team.project).count() == 0
