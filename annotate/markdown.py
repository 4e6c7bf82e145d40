"""Markdown rendering: instructions written by leads, and untrusted model text."""

from __future__ import annotations

import markdown as md
import nh3
from django.utils.safestring import SafeString, mark_safe

_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead",
    "tbody", "tr", "th", "td",
}  # fmt: skip


def render_markdown(text: str) -> SafeString:
    html = md.markdown(text or "", extensions=["fenced_code", "tables", "sane_lists"])
    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes={"a": {"href", "title"}},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above


def _untrusted_renderer() -> md.Markdown:
    renderer = md.Markdown(extensions=["fenced_code", "tables", "sane_lists", "nl2br"])
    # Raw HTML in model output is shown as text, never interpreted: a reply
    # that contains "<script>" displays those characters.
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    renderer.inlinePatterns.deregister("entity")
    return renderer


_UNTRUSTED_TAGS = _TAGS - {"a", "h1", "h2"}


def render_untrusted_markdown(text: str) -> SafeString:
    """Model output as Markdown with raw HTML escaped, then sanitised.

    Links and images are dropped (a completion must not make the annotator's
    browser fetch anything); the sanitiser is a second line of defence.
    """
    html = _untrusted_renderer().convert(text or "")
    clean = nh3.clean(html, tags=_UNTRUSTED_TAGS, attributes={})
    return mark_safe(clean)  # noqa: S308 - raw HTML escaped and sanitised above
