"""The latency plot: p95 series from a provider's metric buckets, drawn as inline SVG."""

from __future__ import annotations

import html
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


def latency_svg(
    series: dict[str, list[tuple[float, float]]],
    *,
    now: float | None = None,
    window: float = 300.0,
    width: int = 420,
    height: int = 90,
) -> str:
    """An inline SVG line plot of latency (ms) over the last ``window`` seconds, one line per
    instance. Plain SVG: it renders in JupyterLab, in nbconvert HTML and on GitHub alike."""
    now = time.time() if now is None else now
    left, right, top, bottom = 44, 8, 8, 18
    pw, ph = width - left - right, height - top - bottom
    points = {
        k: [(t, v) for t, v in pts if now - t <= window and v is not None]
        for k, pts in series.items()
    }
    peak = max((v for pts in points.values() for _, v in pts), default=0.0)
    # The x axis spans the data (at least a minute), up to the whole window.
    oldest = min((t for pts in points.values() for t, _ in pts), default=now)
    span = min(window, max(60.0, now - oldest + 5.0))
    span_text = f"-{span:.0f} s" if span < 120 else f"-{span / 60:.0f} min"
    ymax = _nice_ceiling(peak) if peak > 0 else 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gz-plot" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif"'
        ' font-size="10">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="gz-plot-bg"'
        ' fill="#fafbfc" stroke="#d0d7de"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="gz-axis" fill="#57606a">'
        f"{html.escape(fmt_ms(ymax))}</text>",
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" class="gz-axis"'
        ' fill="#57606a">0</text>',
        f'<text x="{left}" y="{height - 4}" class="gz-axis" fill="#57606a">{span_text}</text>',
        f'<text x="{left + pw}" y="{height - 4}" text-anchor="end" class="gz-axis" fill="#57606a">'
        "now \u00b7 p95 latency</text>",
    ]
    drawn = 0
    for k, (name, pts) in enumerate(sorted(points.items())):
        if not pts:
            continue
        color = PALETTE[k % len(PALETTE)]
        coords = " ".join(
            f"{left + pw * (1 - (now - t) / span):.1f},{top + ph * (1 - v / ymax):.1f}"
            for t, v in sorted(pts)
        )
        title = f"<title>{html.escape(name)}</title>"
        if len(pts) == 1:
            x, y = coords.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}">{title}</circle>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.6"'
                f' points="{coords}">{title}</polyline>'
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
    import math

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
    return f'<div style="font-size:11px;color:#57606a">{"".join(items)}</div>'
