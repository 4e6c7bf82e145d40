"""A corpus of script-injection payloads, and the check that a page showed them as text.

Every payload that runs calls one of three sinks that the check watches: it sets
``window.__xss``, opens a dialog (``alert``), or makes the browser fetch a ``/__xss/`` URL.
Payloads are single lines of at most 100 characters, so that each fits every field it is tried
in (usernames: 150, project licenses: 100).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Payload:
    name: str
    text: str
    # What a Markdown field (model text, instructions) shows of it, where Markdown rightly
    # turns part of it into formatting; None: the text itself, character for character.
    markdown_shows: str | None = None


CORPUS = [
    Payload("script", "<script>window.__xss=1</script>"),
    Payload("img-onerror", "<img src=/__xss/2 onerror=window.__xss=2>"),
    Payload("svg-onload", "<svg onload=window.__xss=3><circle r=40></circle></svg>"),
    Payload("markdown-js-link", "[click 4](javascript:window.__xss=4)", "click 4"),
    Payload("attribute-break", "\"'><img src=/__xss/5 onerror=window.__xss=5>"),
    Payload("template", '{{ 6|add:36 }} {% now "Y" %} ${6+36} #{6+36} <%= 42 %>'),
    Payload("htmx", "<div hx-get=/__xss/7 hx-trigger=load hx-on::before-request=window.__xss=7>"),
    Payload("textarea-close", "</textarea><script>window.__xss=8</script>"),
    Payload("script-close", "</script><script>window.__xss=9</script>"),
    Payload("data-url", '<iframe src="data:text/html,<script>alert(10)</script>"></iframe>'),
    Payload(
        "css", "<style>*{background:url(/__xss/11)}</style><b style=background:url(/__xss/11)>"
    ),
    Payload("js-attribute", '<a href="jav&#x09;ascript:window.__xss=12" id=x12>j12</a>'),
    Payload("markdown-image", '![i13](/__xss/13 "t\\" onerror=\\"window.__xss=13")', ""),
    Payload("unicode", "＜script＞window.__xss=14＜/script＞ \u202e<scr\u200bipt>\u2028x14"),
    Payload("entities", "&lt;img src=/__xss/15 onerror=window.__xss=15&gt; &amp;amp; &#60;b&#62;"),
    Payload(
        "mutation",
        "<math><mtext><table><mglyph><style><img src=/__xss/16 onerror=alert(16)></style></math>",
    ),
    Payload(
        "meta-refresh", '<meta http-equiv=refresh content="0;url=/__xss/17"><base href=/__xss/>'
    ),
    Payload(
        "autofocus", "<input autofocus onfocus=window.__xss=18><details open ontoggle=alert(18)>"
    ),
    Payload(
        "markdown-data-link",
        "[d19](data:text/html;base64,PHNjcmlwdD5hbGVydCgxOSk8L3NjcmlwdD4=)",
        "d19",
    ),
    Payload(
        "object",
        "<object data=/__xss/20></object><embed src=/__xss/20><video src=/__xss/20></video>",
    ),
]

ALL_TEXT = "\n\n".join(p.text for p in CORPUS)

MARKER = "__xss"

# Attributes the pages fill with user text on purpose: a form field's value, the quality
# table's row key. Everywhere else (href, src, style, on*, hx-*) user text is never written.
_TEXT_ATTRIBUTES = ("value", "data-annotator")

_FIND_INJECTIONS = """([marker, textAttributes]) => {
  const found = [];
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on")) found.push(`${el.tagName} has ${name}`);
      if ((name.includes(marker) || attr.value.includes(marker))
          && !textAttributes.includes(name)) {
        found.push(`${el.tagName} ${name}="${attr.value}"`);
      }
      if (document.body.contains(el)
          && /^\\s*(javascript|data|vbscript):/i.test(attr.value.replace(/[\\u0000-\\u0020]/g, ""))
          && ["href", "src", "action", "formaction", "data", "xlink:href"].includes(name)) {
        found.push(`${el.tagName} ${name}="${attr.value}"`);
      }
    }
    const tag = el.tagName.toLowerCase();
    if ((tag === "script" || tag === "style") && el.textContent.includes(marker)) {
      found.push(`<${tag}> holding ${el.textContent}`);
    }
    if (["iframe", "frame", "object", "embed", "video", "math", "base"].includes(tag)
        || (tag === "meta" && el.hasAttribute("http-equiv"))
        || (tag === "svg" && !el.closest(".plot"))) {
      found.push(`a <${tag}> element`);
    }
  }
  return found;
}"""


def watch(page: Any) -> list[str]:
    """Start noting the requests the payloads would make; returns the list that fills up."""
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if MARKER in r.url else None)
    return fetched


def assert_inert(page: Any, fetched: list[str], where: str) -> None:
    """Nothing ran, nothing was fetched, and no payload became an element or an attribute."""
    # what a payload would do after the page loaded (an image failing, htmx's load trigger,
    # a refresh) has had its time
    page.wait_for_load_state("networkidle")
    assert page.evaluate("() => window.__xss") is None, f"{where}: a payload ran"
    assert page.js_dialogs == [], f"{where}: a payload opened a dialog"
    assert fetched == [], f"{where}: a payload made the browser fetch {fetched}"
    found = page.evaluate(_FIND_INJECTIONS, [MARKER, list(_TEXT_ATTRIBUTES)])
    assert found == [], f"{where}: payloads became markup: {found}"


def assert_shown(
    text: str, payloads: list[Payload], where: str, *, markdown: bool, cut: int | None = None
) -> None:
    """Each payload appears in ``text`` (a container's innerText) as the characters it is;
    ``cut``: its first characters only, where the page shows a preview."""
    for p in payloads:
        expected = p.markdown_shows if markdown and p.markdown_shows is not None else p.text
        assert expected[:cut] in text, f"{where}: {p.name} is not shown as text: {expected!r}"
