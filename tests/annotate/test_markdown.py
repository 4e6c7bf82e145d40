"""Markdown for model text and instructions: formatting kept, what was typed shown as typed."""

from __future__ import annotations

import pytest

from annotate.markdown import render_markdown, render_untrusted_markdown

RENDERERS = [render_markdown, render_untrusted_markdown]


@pytest.mark.parametrize("render", RENDERERS)
def test_it_shows_character_references_as_typed(render):
    html = render("&lt;img src=x onerror=alert(1)&gt; &amp;amp; &#60;b&#62; AT&T")
    assert html == (
        "<p>&amp;lt;img src=x onerror=alert(1)&amp;gt; &amp;amp;amp; &amp;#60;b&amp;#62; AT&amp;T</p>"
    )


@pytest.mark.parametrize("render", RENDERERS)
def test_it_shows_raw_html_as_text(render):
    html = render("**Mind** <script>alert(1)</script> and <img src=x onerror=alert(2)>")
    assert html == (
        "<p><strong>Mind</strong> &lt;script&gt;alert(1)&lt;/script&gt; and "
        "&lt;img src=x onerror=alert(2)&gt;</p>"
    )


@pytest.mark.parametrize("render", RENDERERS)
def test_ampersands_in_code_are_escaped_once(render):
    html = render("`a &lt; b` and\n\n```\nx &amp;& y\n```")
    assert "<code>a &amp;lt; b</code>" in html
    assert "x &amp;amp;&amp; y" in html


def test_instructions_keep_web_links_and_drop_script_ones():
    html = render_markdown("[guide](https://example.org/g) [x](javascript:alert(1)) [d](data:,x)")
    assert '<a href="https://example.org/g" rel="noopener noreferrer nofollow">guide</a>' in html
    assert "javascript:" not in html and "data:" not in html


def test_model_text_has_no_links():
    assert render_untrusted_markdown("[guide](https://example.org/g)") == "<p>guide</p>"
