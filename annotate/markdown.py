"""Markdown rendering: instructions written by leads, and untrusted model text."""

from __future__ import annotations

import re

import markdown as md
import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown.inlinepatterns import InlineProcessor

_TAGS = {
    "p", "br", "hr", "strong", "em", "b", "i", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead",
    "tbody", "tr", "th", "td",
}  # fmt: skip


class _LiteralAmpersand(InlineProcessor):
    """An "&" is the character itself, never the start of a character reference: "&lt;"
    reads as those four characters, as it does inside code spans."""

    def handleMatch(self, m: re.Match[str], data: str) -> tuple[str, int, int]:  # noqa: N802
        # Inserted as text already escaped; the serializer keeps a complete reference as is.
        return "&amp;", m.start(0), m.end(0)


def _text_renderer(*, line_breaks: bool) -> md.Markdown:
    """Markdown whose raw HTML and character references show as the characters typed: a
    reply or an instruction that contains "<script>" displays those characters."""
    extensions = ["fenced_code", "tables", "sane_lists"] + (["nl2br"] if line_breaks else [])
    renderer = md.Markdown(extensions=extensions)
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    renderer.inlinePatterns.deregister("entity")
    renderer.inlinePatterns.register(_LiteralAmpersand("&", renderer), "literal_ampersand", 80)
    return renderer


def render_markdown(text: str) -> SafeString:
    """Instructions a lead wrote: Markdown with links, raw HTML shown as text, then sanitised
    (links keep web and mail addresses only; nh3 drops javascript: and data: ones)."""
    html = _text_renderer(line_breaks=False).convert(text or "")
    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes={"a": {"href", "title"}},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - raw HTML escaped and sanitised above


_UNTRUSTED_TAGS = _TAGS - {"a", "h1", "h2"}


def render_untrusted_markdown(text: str) -> SafeString:
    """Model output as Markdown with raw HTML escaped, then sanitised.

    Links and images are dropped (a completion must not make the annotator's
    browser fetch anything); the sanitiser is a second line of defence.
    """
    html = _text_renderer(line_breaks=True).convert(text or "")
    clean = nh3.clean(html, tags=_UNTRUSTED_TAGS, attributes={})
    return mark_safe(clean)  # noqa: S308 - raw HTML escaped and sanitised above
