"""Charts as inline SVG: no script, no font, no network; every label escaped.

Each function returns ``Markup`` (safe to place in a template as is) built
from escaped text and numbers. Money reaches these functions as exact
values (``int`` or ``Decimal``); only the pixel geometry is rounded, never
a value a reader sees: the labels print the exact figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from markupsafe import Markup, escape

WIDTH = 760
LABEL_W = 200  # left column for bar labels, at least; wider when a label needs it, up to LABEL_W_MAX
LABEL_W_MAX = 400  # about 52 characters: a schema.table.column name; a longer one is abbreviated
PLOT_W_MIN = 250  # the bars keep this much when labels widen the label column (the chart grows beyond WIDTH)
VALUE_W = 230  # right column for the printed value
ROW_H = 22
# Category labels are names (tables, columns, files): printed in monospace, whose every character is
# about 0.6 em wide in any such font, so that the chart can reserve their width without measuring text.
MONO = "ui-monospace,SFMono-Regular,Menlo,Consolas,monospace"
LABEL_PX, TICK_PX = 12, 11  # the font sizes of bar labels and of column (tick) labels
CHAR_EM = Decimal("0.62")  # a monospace character's advance, with a margin (DejaVu Sans Mono: 0.602 em)
TICK_CHARS_MAX = 24  # a column label longer than this is abbreviated (the slanted labels need room below)
LOG_RATIO_MIN = 100  # a bar chart whose largest value is this many times its smallest is drawn on a log scale
TICKS_MAX = 16  # category labels a column chart prints; beyond, every few (tooltips name them all)
COLORS = {"bad": "#c0392b", "warn": "#b7791f", "ok": "#2f855a", "neutral": "#4a6fa5", "grid": "#ccd"}


@dataclass(frozen=True)
class Bar:
    label: str
    value: Decimal | int
    text: str  # the exact figure as the reader sees it
    tone: str = "neutral"  # a key of COLORS
    title: str = ""  # tooltip

    def __post_init__(self) -> None:
        # NaN or Infinity (a numeric column's) draws no bar; ``text`` still says it (a trial balance
        # of NaN made the report an internal error: found by a break-it run).
        if not Decimal(self.value).is_finite():
            object.__setattr__(self, "value", 0)


def _px(value: Decimal | int, scale: Decimal) -> int:
    return int((Decimal(value) * scale).to_integral_value(ROUND_HALF_UP))


def _bar_px(value: Decimal | int, scale: Decimal) -> int:
    """A bar's length for ``value`` (its magnitude): at least 2 pixels, so that no nonzero value vanishes."""
    length = _px(abs(Decimal(value)), scale)
    return max(length, 2) if value else length


def _svg(height: int, title: str, body: str, width: int = WIDTH) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{body}</svg>")


def _text_px(chars: int, font_px: int) -> int:
    """The width of ``chars`` monospace characters at ``font_px`` (rounded up: room to spare)."""
    return math.ceil(chars * CHAR_EM * font_px)


def _abbreviated(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and its end around an ellipsis
    (a name's schema and its column are what tell it apart)."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    shown = text[:head] + "\u2026" + text[len(text) - (limit - 1 - head):]
    assert len(shown) == limit
    return shown


def _distinct(labels: Sequence[str], limit: int) -> dict[str, str]:
    """Each label as shown in ``limit`` characters (``_abbreviated``). Where that would show two
    names alike (long names that differ only in their middle), the part all of them share at the
    start gives way to an ellipsis first."""
    shown = {text: _abbreviated(text, limit) for text in labels}
    if len(set(shown.values())) == len(shown):
        return shown
    common = len(os.path.commonprefix(list(shown)))
    tails = {text: _abbreviated("\u2026" + text[common:], limit) if len(text) > limit else text
             for text in shown}
    return tails if len(set(tails.values())) == len(tails) else shown


def _label(text: str, limit: int, font_px: int, attributes: str, shown: str | None = None) -> str:
    """A category label's <text>: the name whole, or abbreviated (``shown``, else ``_abbreviated``)
    with the whole name in its own tooltip (<title>), never cut silently."""
    shown = _abbreviated(text, limit) if shown is None else shown
    title = f"<title>{escape(text)}</title>" if shown != text else ""
    return (f'<text {attributes} font-family="{MONO}" font-size="{font_px}">'
            f"{title}{escape(shown)}</text>")


def bars(title: str, rows: Sequence[Bar]) -> Markup:
    """Horizontal bars, one per row, from a zero axis (negative values extend left of it)."""
    if not rows:
        return Markup("")
    top = max((abs(Decimal(r.value)) for r in rows), default=Decimal(0))
    has_negative = any(Decimal(r.value) < 0 for r in rows)
    # The label column takes the width its longest label needs (8 px before the axis, 4 px at the
    # edge), within LABEL_W..LABEL_W_MAX; the chart grows beyond WIDTH rather than leave the bars
    # less than PLOT_W_MIN.
    label_w = min(max(LABEL_W, _text_px(max(len(r.label) for r in rows), LABEL_PX) + 12), LABEL_W_MAX)
    label_chars = int((label_w - 12) / (CHAR_EM * LABEL_PX))
    width = max(WIDTH, label_w + PLOT_W_MIN + VALUE_W)
    plot_w = width - label_w - VALUE_W
    assert plot_w >= PLOT_W_MIN and _text_px(label_chars, LABEL_PX) + 12 <= label_w
    zero = label_w + (plot_w // 2 if has_negative else 0)
    span = plot_w // 2 if has_negative else plot_w
    scale = Decimal(span) / top if top else Decimal(0)
    # Counts that span orders of magnitude (one wrong row beside thousands of warnings): a log
    # scale, said in the title, so that the small ones stay visible; the printed figures stay exact.
    nonzero = [abs(Decimal(r.value)) for r in rows if r.value]
    log = not has_negative and bool(nonzero) and top / min(nonzero) >= LOG_RATIO_MIN
    if log:
        title = f"{title} (log scale)"
    parts = []
    shown = _distinct([r.label for r in rows], label_chars)
    for i, r in enumerate(rows):
        y = 6 + i * ROW_H
        w = (max(2, _px((abs(Decimal(r.value)) + 1).log10(), Decimal(span) / (top + 1).log10()))
             if log and r.value else _bar_px(r.value, scale))
        x = zero - w if Decimal(r.value) < 0 else zero
        tip = escape(r.title or f"{r.label}: {r.text}")
        parts.append(
            f'<g><title>{tip}</title>'
            + _label(r.label, label_chars, LABEL_PX, f'x="{label_w - 8}" y="{y + 14}" text-anchor="end"',
                     shown[r.label])
            + f'<rect x="{x}" y="{y + 3}" width="{w}" height="{ROW_H - 8}" fill="{COLORS[r.tone]}"/>'
            f'<text x="{label_w + plot_w + 8}" y="{y + 14}">{escape(r.text)}</text></g>')
    height = 12 + len(rows) * ROW_H
    parts.append(f'<line x1="{zero}" y1="4" x2="{zero}" y2="{height - 4}" stroke="#555"/>')
    return _svg(height, title, "".join(parts), width)


def columns(title: str, rows: Sequence[Bar], height: int = 240) -> Markup:
    """Vertical bars over categories in their given order (a histogram), counts printed above."""
    if not rows:
        return Markup("")
    top = max((Decimal(r.value) for r in rows), default=Decimal(0))
    every = math.ceil(len(rows) / TICKS_MAX)  # with many columns, label every few and print no counts
    # The labels slant at 30 degrees, down and to the left of their column: the longest needs room
    # below the axis (half its length), the first room on the left (cos 30 of its length, < 0.87).
    longest = max(min(len(r.label), TICK_CHARS_MAX) for r in rows[::every])
    plot_h = height - 20 - max(80, 24 + _text_px(longest, TICK_PX) // 2)
    first = min(len(rows[0].label), TICK_CHARS_MAX)
    left = max(60, math.ceil(_text_px(first, TICK_PX) * Decimal("0.87")) + 4)
    slot = (WIDTH - left - 10) // len(rows)
    scale = Decimal(plot_h) / top if top else Decimal(0)
    parts = []
    for i, r in enumerate(rows):
        h = _bar_px(r.value, scale)
        x = left + i * slot
        bar_x, bar_w = x + 1 + slot // 8, max(slot - 2 - slot // 4, 1)
        base = 20 + plot_h
        tip = escape(r.title or f"{r.label}: {r.text}")
        parts.append(
            f'<g><title>{tip}</title>'
            f'<rect x="{bar_x}" y="{base - h}" width="{bar_w}" height="{h}" fill="{COLORS[r.tone]}"/>'
            + (f'<text x="{x + slot // 2}" y="{base - h - 4}" text-anchor="middle">{escape(r.text)}</text>'
               if every == 1 else "")
            + (_label(r.label, TICK_CHARS_MAX, TICK_PX,
                      f'x="{x + slot // 2 + 4}" y="{base + 14}" text-anchor="end" class="tick" '
                      f'transform="rotate(-30 {x + slot // 2 + 4} {base + 14})"')
               if i % every == 0 else "")
            + "</g>")
    parts.append(f'<line x1="{left}" y1="{20 + plot_h}" x2="{WIDTH - 10}" y2="{20 + plot_h}" stroke="#555"/>')
    return _svg(height, title, "".join(parts))


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[int]
    color: str


def lines(title: str, labels: Sequence[str], series: Sequence[Series], height: int = 180) -> Markup:
    """One polyline per series over runs (oldest left), on one scale; each point's value in its tooltip."""
    if not labels or not series:
        return Markup("")
    plot_h = height - 60
    left, right = 10, WIDTH - 10
    step = Decimal(right - left) / max(len(labels) - 1, 1)
    parts = [f'<line x1="{left}" y1="{20 + plot_h}" x2="{right}" y2="{20 + plot_h}" stroke="#555"/>']
    legend = []
    top = max((v for s in series for v in s.values), default=0)
    scale = Decimal(plot_h) / top if top else Decimal(0)
    for k, s in enumerate(series):
        points = [(left + _px(i, step), 20 + plot_h - _px(v, scale)) for i, v in enumerate(s.values)]
        parts.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="2" points="'
                     + " ".join(f"{x},{y}" for x, y in points) + '"/>')
        for (x, y), v, label in zip(points, s.values, labels, strict=True):
            parts.append(f'<circle cx="{x}" cy="{y}" r="3.5" fill="{s.color}">'
                         f'<title>{escape(label)}: {escape(s.name)} {v:,}</title></circle>')
        legend.append(f'<text x="{left + k * 240}" y="{height - 12}" fill="{s.color}">'
                      f'{escape(s.name)} (last: {s.values[-1]:,})</text>')
    legend.append(f'<text x="{right}" y="12" text-anchor="end" class="tick">top of the scale: {top:,}</text>')
    return _svg(height, title, "".join(parts + legend))
