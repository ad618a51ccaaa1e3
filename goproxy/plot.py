"""Server-rendered SVG for the front page: requests per minute and hit ratio over the last hour."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence

from .status.model import Minute

SVG_NS = "http://www.w3.org/2000/svg"
# Margins around the plotting area: room for the axis labels and the legend.
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 40, 26, 22


def nice_ceiling(value: float) -> float:
    """Return the smallest 1, 2 or 5 times a power of ten that is at least value (1 for value <= 1)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    raise AssertionError("unreachable")


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "label") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{cls}">'
            f"{html.escape(text)}</text>")


def _clock(t: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(t))


def traffic_plot(minutes: Sequence[Minute], now: float, span: float = 3600.0, step: float = 60.0,
                 width: int = 480, height: int = 180) -> str:
    """Return an <svg> element: a bar of requests per step and a line of the hit ratio.

    minutes are the history's points (each covers the step ending at its end); those that
    end more than span before now are left out. The left axis counts requests, the right is
    the hit ratio from 0 to 100%; a point without artifact requests has no ratio. With no
    point, the plot says so. The markup is well-formed XML; every text is escaped.
    """
    pw, ph = width - _LEFT - _RIGHT, height - _TOP - _BOTTOM
    begin = now - span
    shown = [m for m in minutes if begin < m.end <= now]
    top = nice_ceiling(max((m.requests for m in shown), default=0))

    def x(t: float) -> float:
        return _LEFT + (t - begin) / span * pw

    def y(fraction: float) -> float:
        return _TOP + (1 - fraction) * ph

    total = sum(m.requests for m in shown)
    lookups = sum(m.lookups for m in shown)
    hits = sum(m.hits for m in shown)
    summary = f"{total} requests in the last {span / 60:.0f} minutes"
    if lookups:
        summary += f", {hits * 100 / lookups:.0f}% of artifact requests from the cache"
    out = [f'<svg xmlns="{SVG_NS}" class="plot" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="{html.escape(summary)}">',
           f"<title>{html.escape(summary)}</title>",
           f'<rect class="frame" x="{_LEFT}" y="{_TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for fraction in (0.5, 1.0):
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + pw}" y1="{y(fraction):.1f}" '
                   f'y2="{y(fraction):.1f}" stroke="#999" stroke-dasharray="2 3"/>')
    for fraction in (0.0, 0.5, 1.0):
        if (top * fraction).is_integer():
            out.append(_text(_LEFT - 4, y(fraction) + 4, f"{top * fraction:.0f}", "end"))
        out.append(_text(_LEFT + pw + 4, y(fraction) + 4, f"{fraction * 100:.0f}%"))
    minutes_shown = span / 60
    out.append(_text(x(begin), height - 6, f"-{minutes_shown:.0f} min"))
    out.append(_text(x(begin + span / 2), height - 6, f"-{minutes_shown / 2:.0f} min", "middle"))
    out.append(_text(x(now), height - 6, "now", "end"))
    out.append(f'<rect class="bar" x="{_LEFT}" y="6" width="10" height="10" fill="#4a7fd0"/>')
    out.append(_text(_LEFT + 14, 15, "requests per minute"))
    out.append(f'<line class="ratio" x1="{_LEFT + 150}" x2="{_LEFT + 166}" y1="11" y2="11" '
               f'stroke="#d0802a" stroke-width="2"/>')
    out.append(_text(_LEFT + 170, 15, "hit ratio"))
    if not shown:
        out.append(_text(_LEFT + pw / 2, _TOP + ph / 2 + 4, "no traffic recorded yet", "middle", "empty"))
    for m in shown:
        x0, x1 = max(x(m.end - step), _LEFT), x(m.end)
        h = m.requests / top * ph
        if m.requests:
            ratio = f", {m.hits} of {m.lookups} artifacts from the cache" if m.lookups else ""
            tip = f"{_clock(m.end)}: {m.requests} requests{ratio}"
            out.append(f'<rect class="bar" x="{x0:.1f}" y="{_TOP + ph - h:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                       f'height="{h:.1f}" fill="#4a7fd0"><title>{html.escape(tip)}</title></rect>')
    points = [(x(m.end - step / 2), y(m.hit_ratio)) for m in shown if m.hit_ratio is not None]
    if len(points) > 1:
        coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        out.append(f'<polyline class="ratio" points="{coords}" fill="none" stroke="#d0802a" stroke-width="2"/>')
    for px, py in points:
        out.append(f'<circle class="ratio-point" cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="#d0802a"/>')
    out.append("</svg>")
    return "\n".join(out)
