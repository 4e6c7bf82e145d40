"""Figures of the loop page drawn by matplotlib into SVG text, from plain numbers.

``training.plots`` decides what to draw (which numbers, which reference lines); this module
only draws a ``Figure`` description. matplotlib is imported inside ``render_svg``: it takes a
second or more to import, and the web process should not pay that at start-up, only on the
first page that shows a plot (the drawings are cached per loop state).

Y ranges never follow the data's min and max alone: a figure states a span its axis always
covers (``min_span``) and whether 0 belongs on it, so a loss going from 0.655 to 0.639 is drawn
as the small change it is.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

# Colours: the new version (child) in blue, its parent in orange, rejected in red.
CHILD, PARENT, REJECTED, REFERENCE = "#2f5bd3", "#d97706", "#b42318", "#5d6675"


@dataclass
class Series:
    """Points of one kind; ``style`` is "child", "parent" or "trend"."""

    label: str
    points: list[tuple[float, float]]
    style: str = "child"
    # Draw a line through the points: only for numbers measured the same way at every x.
    connect: bool = False
    # (low, high) of each point's interval, drawn as an error bar.
    intervals: list[tuple[float, float]] | None = None
    # A short note written above each point (e.g. "n=12").
    notes: list[str] | None = None


@dataclass
class Figure:
    """What one plot shows; ``render_svg`` draws it."""

    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    # x positions and their tick labels ("v1", ...); None: matplotlib's integer ticks.
    x_ticks: list[tuple[float, str]] | None = None
    # A fixed y range (rates: 0 to 1); else the data's range widened as below.
    y_range: tuple[float, float] | None = None
    include_zero: bool = False
    # The y axis spans at least this much, centred on the data.
    min_span: float = 0.0
    # Horizontal reference lines: (y, label).
    references: list[tuple[float, str]] = field(default_factory=list)
    # x positions of versions the gate rejected: shaded, and their points drawn as crosses.
    rejected: list[float] = field(default_factory=list)
    # Pairs of points to join with a thin line (a parent and its child).
    links: list[tuple[tuple[float, float], tuple[float, float]]] = field(default_factory=list)
    # A prefix for the SVG element ids, unique on the page.
    slug: str = "plot"

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


def y_limits(figure: Figure) -> tuple[float, float]:
    """The y range: fixed, or the data with its intervals and references, 0 when asked, at
    least ``min_span`` wide, and 6% of room at either end."""
    if figure.y_range is not None:
        return figure.y_range
    ys = [y for s in figure.series for _, y in s.points]
    ys += [v for s in figure.series for iv in (s.intervals or []) for v in iv]
    ys += [y for y, _ in figure.references]
    if figure.include_zero:
        ys.append(0.0)
    lo, hi = min(ys), max(ys)
    if hi - lo < figure.min_span:
        middle = (hi + lo) / 2
        lo, hi = middle - figure.min_span / 2, middle + figure.min_span / 2
        if figure.include_zero and lo > 0:  # keep 0 on the axis after centring
            lo, hi = 0.0, max(hi - lo, figure.min_span)
        elif figure.include_zero and hi < 0:
            lo, hi = min(lo - hi, -figure.min_span), 0.0
    room = (hi - lo) * 0.06 or 0.5
    return lo - room, hi + room


def _points_style(series: Series) -> dict[str, Any]:
    if series.style == "parent":
        return {"marker": "s", "markerfacecolor": "white", "color": PARENT, "markersize": 6}
    return {"marker": "o", "color": CHILD, "markersize": 6}


def render_svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), text kept as text."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure as MplFigure
    from matplotlib.ticker import MaxNLocator

    rc: Any = {  # matplotlib types its keys as a Literal of every rcParam
        "svg.fonttype": "none",  # text stays <text>, readable and searchable
        "svg.hashsalt": figure.slug,  # stable element ids, so a cached drawing is byte-equal
        "font.size": 9,
        "font.family": "sans-serif",
        "text.parse_math": False,  # a "$" in a label is a dollar, not TeX
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with matplotlib.rc_context(rc):
        fig = MplFigure(figsize=(4.8, 3.4), layout="constrained")
        FigureCanvasSVG(fig)
        ax = fig.add_subplot()
        ax.set_xlabel(figure.x_label)
        ax.set_ylabel(figure.y_label)
        ax.grid(True, color="#e3e6eb", linewidth=0.8)
        ax.set_axisbelow(True)
        for i, x in enumerate(figure.rejected):
            band = ax.axvspan(
                x - 0.45,
                x + 0.45,
                color=REJECTED,
                alpha=0.1,
                linewidth=0,
                label="rejected by the gate" if i == 0 else None,
            )
            band.set_gid(f"{figure.slug}-rejected-band")
        for (x0, y0), (x1, y1) in figure.links:
            ax.plot([x0, x1], [y0, y1], color="#9aa3b2", linewidth=1, zorder=1)
        rejected = set(figure.rejected)
        for series in figure.series:
            if not series.points:
                continue
            xs = [p[0] for p in series.points]
            ys = [p[1] for p in series.points]
            style = _points_style(series)
            ax.plot(
                xs,
                ys,
                linestyle="-" if series.connect else "none",
                linewidth=1.5,
                label=series.label,
                zorder=3 if series.style == "parent" else 2,  # parents stay visible
                **style,
            )
            if series.intervals:
                low = [y - lo for y, (lo, _) in zip(ys, series.intervals, strict=True)]
                high = [hi - y for y, (_, hi) in zip(ys, series.intervals, strict=True)]
                ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=style["color"], capsize=3)
            for x, y, note in zip(xs, ys, series.notes or [], strict=False):
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7.5)
            crossed = [(x, y) for x, y in zip(xs, ys, strict=True) if round(x) in rejected]
            if crossed and series.style != "parent":
                ax.plot(
                    [x for x, _ in crossed],
                    [y for _, y in crossed],
                    linestyle="none",
                    marker="X",
                    markersize=8,
                    color=REJECTED,
                    zorder=4,
                    gid=f"{figure.slug}-rejected",
                )
        for y, label in figure.references:
            line = ax.axhline(y, color=REFERENCE, linestyle="--", linewidth=1, label=label)
            line.set_gid(f"{figure.slug}-ref-{y:g}")
        ax.set_ylim(*y_limits(figure))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
        if figure.x_ticks is not None:
            positions = [x for x, _ in figure.x_ticks]
            ax.set_xticks(positions, [label for _, label in figure.x_ticks])
            ax.set_xlim(min(positions) - 0.6, max(positions) + 0.6)
            for tick in ax.get_xticklabels():
                if tick.get_position()[0] in rejected:
                    tick.set_color(REJECTED)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            unique = dict(zip(labels, handles, strict=True))
            fig.legend(
                unique.values(),
                unique.keys(),
                fontsize=7.5,
                loc="outside lower center",
                ncols=2,
                frameon=False,
            )
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None, "Creator": None})
    return _inline(out.getvalue(), figure.title)


def _inline(svg: str, title: str) -> str:
    """Drop the XML prolog and the fixed size, so CSS sizes the drawing; name it for readers."""
    start = svg.index("<svg")
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg[start:], count=1, flags=re.S)
    svg = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", svg, count=1)
    return svg.replace("<svg", f'<svg role="img" aria-label={quoteattr(title)}', 1)
