"""Charts drawn on the server as inline SVG: daily-share lines, horizontal bars and stacked bars.

Owns: Line, line_chart, bar_chart, stacked_bar_chart, PALETTE.
Must not import: aiohttp, decision logic, the clock (values in, markup out).

The pages keep a strict CSP (no scripts, only the hashed stylesheet), so a chart is plain SVG with
presentation attributes, never a ``style`` attribute. Each has a ``<title>`` and a ``<desc>``
(``role="img"``), text in ``currentColor`` (readable in dark mode and in print), and lines that
differ by dash pattern as well as colour, so a grey printout still tells them apart. The page puts
the same numbers in a table next to every chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from gateway.web.views.html import Markup, el

PALETTE = ("#0b57d0", "#b3261e", "#146c2e", "#8a4b00", "#6a1b9a", "#00796b", "#c2185b", "#455a64",
           "#5d4037", "#2e7d32", "#ef6c00", "#283593")
"""Colours with enough contrast on white and on the dark theme's card."""
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4")
_FONT = "system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a share chart: a name and a value between 0 and 1 (or None: no data) per day."""

    name: str
    points: tuple[tuple[date, float | None], ...]


def _svg(ident: str, title: str, desc: str, width: int, height: int, *body: Markup) -> Markup:
    return el(
        "svg",
        el("title", title, id=f"{ident}-title"),
        el("desc", desc, id=f"{ident}-desc"),
        *body,
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {height}",
        width="100%",
        role="img",
        aria_labelledby=f"{ident}-title {ident}-desc",
        font_family=_FONT,
        font_size="12",
        fill="currentColor",
        class_="chart",
    )


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def line_chart(ident: str, title: str, desc: str, lines: Sequence[Line], *, floor: float = 0.0) -> Markup:
    """Daily shares as lines over the period, y from ``floor`` to 100 %, one legend entry per line."""
    width, left, right, top = 760, 48, 12, 12
    plot_h = 220
    legend_rows = (len(lines) + 2) // 3
    height = top + plot_h + 28 + legend_rows * 18 + 6
    days = sorted({d for line in lines for d, _ in line.points})
    span = max(1, len(days) - 1)
    index = {d: i for i, d in enumerate(days)}
    plot_w = width - left - right
    low = max(0.0, min(floor, 1.0))

    def x(day: date) -> float:
        return left + plot_w * index[day] / span

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (1 - low if low < 1 else 1))

    parts: list[Markup] = []
    steps = 5 if abs(low - 0.5) < 1e-9 else 4
    for step in range(steps + 1):
        level = low + (1 - low) * step / steps
        parts.append(el("line", x1=left, x2=width - right, y1=f"{y(level):.1f}", y2=f"{y(level):.1f}",
                        stroke="#8a939c", stroke_width="0.5", stroke_dasharray=None if step == 0 else "2 3"))
        parts.append(el("text", _pct(level), x=left - 6, y=f"{y(level) + 4:.1f}", text_anchor="end"))
    if days:
        ticks = sorted({0, len(days) - 1, *range(0, len(days), max(1, len(days) // 6))})
        for i in ticks:
            if 0 < i < len(days) - 1 and len(days) - 1 - i < max(1, len(days) // 12):
                continue
            anchor = "start" if i == 0 else "end" if i == len(days) - 1 else "middle"
            parts.append(el("text", days[i].strftime("%b %d"), x=f"{x(days[i]):.1f}", y=top + plot_h + 18,
                            text_anchor=anchor))
    for n, line in enumerate(lines):
        colour, dash = PALETTE[n % len(PALETTE)], DASHES[n % len(DASHES)]
        runs: list[list[str]] = [[]]
        for day, value in line.points:
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{x(day):.1f},{y(max(low, value)):.1f}")
        for run in runs:
            if len(run) > 1:
                parts.append(el("polyline", points=" ".join(run), fill="none", stroke=colour, stroke_width="2",
                                stroke_dasharray=dash or None, stroke_linejoin="round"))
            elif run:
                cx, cy = run[0].split(",")
                parts.append(el("circle", cx=cx, cy=cy, r="2.5", fill=colour))
        row, col = divmod(n, 3)
        lx, ly = left + col * (plot_w / 3), top + plot_h + 38 + row * 18
        parts.append(el("line", x1=f"{lx:.1f}", x2=f"{lx + 22:.1f}", y1=ly - 4, y2=ly - 4, stroke=colour,
                        stroke_width="2.5", stroke_dasharray=dash or None))
        parts.append(el("text", line.name, x=f"{lx + 28:.1f}", y=ly))
    return _svg(ident, title, desc, width, height, *parts)


def bar_chart(ident: str, title: str, desc: str, bars: Sequence[tuple[str, int]], *, unit: str = "") -> Markup:
    """Horizontal bars, one per label, each with its value written at its end."""
    width, label_w, row_h, top = 760, 150, 26, 6
    height = top + row_h * max(1, len(bars)) + 6
    biggest = max((v for _, v in bars), default=0) or 1
    plot_w = width - label_w - 70
    parts: list[Markup] = []
    for n, (label, value) in enumerate(bars):
        y0 = top + n * row_h
        w = plot_w * value / biggest
        parts.append(el("text", label, x=label_w - 8, y=y0 + 17, text_anchor="end"))
        parts.append(el("rect", x=label_w, y=y0 + 4, width=f"{w:.1f}", height=row_h - 8, fill=PALETTE[0], rx="2"))
        parts.append(el("text", f"{value}{unit}", x=f"{label_w + w + 6:.1f}", y=y0 + 17))
    return _svg(ident, title, desc, width, height, *parts)


def stacked_bar_chart(ident: str, title: str, desc: str, rows: Sequence[tuple[str, Sequence[int]]],
                      segments: Sequence[tuple[str, str]]) -> Markup:
    """One horizontal bar per row, split into ``segments`` (name, colour) as shares of the row's total."""
    width, label_w, row_h, top = 760, 110, 30, 6
    legend_y = top + row_h * max(1, len(rows)) + 16
    height = legend_y + 8
    plot_w = width - label_w - 70
    parts: list[Markup] = []
    for n, (label, values) in enumerate(rows):
        y0 = top + n * row_h
        total = sum(values)
        parts.append(el("text", label, x=label_w - 8, y=y0 + 19, text_anchor="end"))
        offset = 0.0
        for value, (name, colour) in zip(values, segments):
            if not value:
                continue
            w = plot_w * value / total
            parts.append(el("rect", el("title", f"{label}: {name} {value}"), x=f"{label_w + offset:.1f}", y=y0 + 4,
                            width=f"{w:.1f}", height=row_h - 8, fill=colour, stroke="#ffffff", stroke_width="0.5"))
            offset += w
        parts.append(el("text", f"{total}", x=f"{label_w + plot_w + 6:.1f}", y=y0 + 19))
    step = (width - label_w) / max(1, len(segments))
    for n, (name, colour) in enumerate(segments):
        lx = label_w + n * step
        parts.append(el("rect", x=f"{lx:.1f}", y=legend_y - 10, width="12", height="12", fill=colour))
        parts.append(el("text", name, x=f"{lx + 16:.1f}", y=legend_y))
    return _svg(ident, title, desc, width, height, *parts)


__all__ = ["DASHES", "PALETTE", "Line", "bar_chart", "line_chart", "stacked_bar_chart"]
