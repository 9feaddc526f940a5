"""Figures for the HTML report: matplotlib (through scikit-learn's display classes where one
exists) drawn off screen and inlined as SVG, so the page needs nothing outside itself.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)
_NAMESPACES = re.compile(r'\s+xmlns(:\w+)?="[^"]*"')  # inline SVG in HTML needs none
COLORS = {"model": "#1f77b4", "oracle": "#7f7f7f", "bad": "#d62728", "good": "#2ca02c"}


def start() -> None:
    """Draw off screen, whatever the user's default backend (no window, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(
        {
            "svg.fonttype": "path",  # glyphs as paths: no font needed where the page is opened
            "font.size": 9,
            "legend.fontsize": 7.5,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


@contextmanager
def figure(width: float = 5.0, height: float = 3.4, ncols: int = 1) -> Iterator[tuple[Any, Any]]:
    """A figure of its own (not pyplot's global state) and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols)
    yield fig, axes


def svg(fig: Any) -> str:
    """The figure as an inline `<svg>` element: no XML prolog, metadata or namespace URLs."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = _METADATA.sub("", text)
    head, _, body = text.partition(">")
    return _NAMESPACES.sub("", head) + ">" + body


def barh(ax: Any, labels: list[str], values: list[float], colors: list[str] | str) -> None:
    """Horizontal bars, largest on top, each labelled with its value."""
    positions = list(range(len(labels)))[::-1]
    bars = ax.barh(positions, values, color=colors)
    ax.set_yticks(positions, labels)
    ax.bar_label(bars, labels=[_short(v) for v in values], padding=3, fontsize=8)
    ax.margins(x=0.18)


def _short(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2e}" if abs(value) < 0.001 else f"{value:.3f}"
