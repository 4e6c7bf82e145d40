"""Number formats of the Quality page; every undefined statistic shows as a dash."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

_DASH = "–"


@register.filter
def quality_num(value: float | None) -> str:
    return _DASH if value is None else f"{value:.3f}"


@register.filter
def quality_pct(value: float | None) -> str:
    return _DASH if value is None else f"{100 * value:.0f}%"


@register.filter
def quality_p(value: float | None) -> str:
    """A p-value as it reads in a table: "p = 0.136", "p < 0.001", or "p –" when there is none."""
    if value is None:
        return f"p {_DASH}"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


@register.filter
def quality_seconds(value: float | None) -> str:
    return _DASH if value is None else f"{value:.1f} s"


@register.filter
def quality_ci(value: Any) -> str:
    if not value:
        return ""
    lo, hi = value
    return f"[{lo:.3f}, {hi:.3f}]"
