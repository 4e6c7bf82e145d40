from __future__ import annotations

from django import template
from django.utils.safestring import SafeString

from annotate.markdown import render_untrusted_markdown

register = template.Library()


@register.filter
def model_text(text: str) -> SafeString:
    """Render untrusted model text (prompts and completions) safely."""
    return render_untrusted_markdown(text)
