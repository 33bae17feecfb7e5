"""The latency plot: p95 series from a provider's metric buckets, drawn as inline SVG."""

from __future__ import annotations

import html
import math
import time
from typing import Any

from .formatting import fmt_ms
from .style import PALETTE


def latency_series(provider: Any, window: float = 300.0) -> dict[str, list[tuple[float, float]]]:
    """Per instance ``[(wall time, p95 ms)]`` of the metric buckets in the recent window.
    Call on the provider's loop."""
    now = time.time()
    out: dict[str, list[tuple[float, float]]] = {}
    for inst in provider.instances:
        metrics = getattr(inst, "metrics", None)
        if metrics is None:
            continue
        rows = metrics.history_rows()
        pts = []
        for row in reversed(rows):
            if now - row["time"] > window:
                break
            if row.get("p95_ms") is not None:
                pts.append((row["time"], row["p95_ms"]))
        out[inst.id] = pts
    return out


#: A series point more than this many bucket lengths after the previous one starts a new
#: segment: no line is drawn across time with no calls.
_GAP_BUCKETS = 1.5
_BUCKET_S = 5.0


def _segments(pts: list[tuple[float, float]], gap: float) -> list[list[tuple[float, float]]]:
    out: list[list[tuple[float, float]]] = []
    for t, v in sorted(pts):
        if out and t - out[-1][-1][0] <= gap:
            out[-1].append((t, v))
        else:
            out.append([(t, v)])
    return out


def plot_scale(values: list[float]) -> float:
    """The y axis' top: the points' peak, unless a few outliers stand far above the rest
    (then the top fits the rest and the outliers are clipped with a marker), so one slow
    call cannot flatten every other line to the floor."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if not ordered:
        return 1.0
    peak = ordered[-1]
    if len(ordered) >= 4:
        typical = ordered[int(0.9 * (len(ordered) - 1))]
        if peak > 3 * typical > 0:
            peak = typical * 1.25
    return _nice_ceiling(peak) if peak > 0 else 1.0


def latency_svg(
    series: dict[str, list[tuple[float, float]]],
    *,
    now: float | None = None,
    window: float = 300.0,
    width: int = 420,
    height: int = 90,
    bucket: float = _BUCKET_S,
) -> str:
    """An inline SVG line plot of p95 latency over the last ``window`` seconds, one line per
    instance. The x axis is always the whole window (the picture does not rescale as calls
    come and go); idle stretches are gaps; points above the scale (see :func:`plot_scale`)
    sit on the top edge as a triangle whose tooltip gives the value. Plain SVG: it renders
    in JupyterLab, in nbconvert HTML and on GitHub alike."""
    now = time.time() if now is None else now
    left, right, top, bottom = 44, 8, 8, 18
    pw, ph = width - left - right, height - top - bottom
    # a non-finite latency (inf, NaN) cannot be drawn: it is left out, as a gap
    points = {
        k: [(t, v) for t, v in pts if 0 <= now - t <= window and v is not None and math.isfinite(v)]
        for k, pts in series.items()
    }
    ymax = plot_scale([v for pts in points.values() for _, v in pts])
    span_text = f"-{window:.0f} s" if window < 120 else f"-{window / 60:.0f} min"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gz-plot" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif"'
        ' font-size="10">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="gz-plot-bg"'
        ' fill="#fafbfc" stroke="#d0d7de"/>',
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph / 2:.1f}" y2="{top + ph / 2:.1f}"'
        ' class="gz-gridline" stroke="#e5e7eb" stroke-dasharray="2,3"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="gz-axis" fill="#57606a">'
        f"{html.escape(fmt_ms(ymax))}</text>",
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" class="gz-axis"'
        ' fill="#57606a">0</text>',
        f'<text x="{left}" y="{height - 4}" class="gz-axis" fill="#57606a">{span_text}</text>',
        f'<text x="{left + pw}" y="{height - 4}" text-anchor="end" class="gz-axis" fill="#57606a">'
        "now \u00b7 p95 latency</text>",
    ]

    def xy(t: float, v: float) -> tuple[float, float]:
        return left + pw * (1 - (now - t) / window), top + ph * (1 - min(v, ymax) / ymax)

    drawn = 0
    for k, (name, pts) in enumerate(sorted(points.items())):
        if not pts:
            continue
        color = PALETTE[k % len(PALETTE)]
        title = f"<title>{html.escape(name)}</title>"
        for seg in _segments(pts, bucket * _GAP_BUCKETS):
            coords = " ".join("{:.1f},{:.1f}".format(*xy(t, v)) for t, v in seg)
            if len(seg) == 1:
                x, y = xy(*seg[0])
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">{title}</circle>'
                )
            else:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="1.6"'
                    f' points="{coords}">{title}</polyline>'
                )
        for t, v in pts:
            if v > ymax:
                x, _ = xy(t, v)
                label = html.escape(f"{name}: {fmt_ms(v)}")
                parts.append(
                    f'<path class="gz-clipped" d="M{x - 4:.1f},{top + 6} L{x + 4:.1f},{top + 6}'
                    f' L{x:.1f},{top} Z" fill="{color}"><title>{label}</title></path>'
                )
        drawn += 1
    if not drawn:
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2 + 3}" text-anchor="middle"'
            ' fill="#8c959f">no calls in the window yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def legend(names: list[str]) -> str:
    items = []
    for k, name in enumerate(sorted(names)):
        color = PALETTE[k % len(PALETTE)]
        items.append(
            f'<span style="margin-right:10px;white-space:nowrap"><span style="color:{color}">'
            f"\u25ac</span> {html.escape(name)}</span>"
        )
    return f'<div class="gz-legend" style="font-size:11px">{"".join(items)}</div>'
