"""Static pictures of a panel: ``text/html`` and ``text/plain`` of its last state.

A widget lives only while its kernel does. A panel's display therefore also carries these
two, updated at the end of every cell and when the panel closes, so a saved notebook
reopened after a restart, nbconvert HTML and GitHub's viewer show the pool as it last was.
The HTML is self-contained (inline styles with JupyterLab's CSS variables as fallbacks, no
scripts), so sanitizers keep it.
"""

from __future__ import annotations

import html
import time
from typing import Any

from .formatting import aggregate_extras, extra_kind, fmt_extra, fmt_int, fmt_ms, fmt_rate
from .plot import latency_svg
from .rows import breaker_summary, error_text
from .style import BREAKER_COLORS, HEALTH_COLORS

#: Marks the static picture; the labextension shows it where a widget cannot be restored.
STATIC_ATTR = "data-gleitzeit-static"

_FG = "var(--jp-ui-font-color1, #1f2328)"
_MUTED = "var(--jp-ui-font-color2, #57606a)"
_BORDER = "var(--jp-border-color1, #d0d7de)"
_ERROR = "var(--jp-error-color1, #b3261e)"
_CELL = "padding:2px 8px;text-align:right;white-space:nowrap"


def _stamp(snap: dict[str, Any]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.get("time", time.time())))


def _headers(kind: str | None) -> list[str]:
    extra = {"tokens": "tokens/s", "runs": "runs / recyc."}.get(kind or "")
    heads = ["instance", "health", "breaker", "in flight", "requests", "success"]
    heads += ["p50", "p95", "p99"] + ([extra] if extra else []) + ["last error"]
    return heads


def _cells(row: dict[str, Any], kind: str | None, total: bool) -> list[tuple[str, str]]:
    """(text, extra style) per column of one row."""
    if total:
        name = "ALL"
        health = f"{row.get('available', row.get('healthy', 0))}/{row.get('instances', 0)} ok"
        breaker, hcolor, bcolor, err, fresh = breaker_summary(row), _FG, _FG, "", False
    else:
        name = str(row.get("label") or row.get("instance", ""))
        health = str(row.get("status", ""))
        breaker = str(row.get("breaker", "closed"))
        hcolor = HEALTH_COLORS.get(health, _MUTED)
        bcolor = BREAKER_COLORS.get(breaker, _MUTED)
        breaker = breaker.replace("_", "-")
        err, _, fresh = error_text(row)
    out = [
        (name, "text-align:left"),
        (health, f"text-align:left;color:{hcolor}"),
        (breaker, f"text-align:left;color:{bcolor}"),
        (fmt_int(row.get("in_flight", 0)), ""),
        (fmt_int(row.get("requests", 0)), ""),
        (fmt_rate(row.get("success_rate")), ""),
        (fmt_ms(row.get("p50_ms")), ""),
        (fmt_ms(row.get("p95_ms")), ""),
        (fmt_ms(row.get("p99_ms")), ""),
    ]
    if kind:
        out.append((fmt_extra(kind, row), ""))
    color = _ERROR if fresh else _MUTED
    out.append((err, f"text-align:left;white-space:normal;color:{color}"))
    return out


def snapshot_html(
    snap: dict[str, Any],
    series: dict[str, list[tuple[float, float]]] | None = None,
    *,
    window: float = 300.0,
    note: str = "snapshot",
) -> str:
    """The panel's last state as a self-contained HTML table (plus the latency plot)."""
    rows = snap.get("instances", [])
    kind = extra_kind(rows)
    total = aggregate_extras(kind, rows, snap.get("totals", {}))
    name = html.escape(str(snap.get("name", "pool")))
    queue = snap.get("queue", {}).get("waiting", 0)
    heads = _headers(kind)
    left = {0, 1, 2, len(heads) - 1}  # name, health, breaker, error: text columns
    head = "".join(
        f'<th style="{_CELL};text-align:{"left" if k in left else "right"};'
        f'color:{_MUTED};border-bottom:1px solid {_BORDER}">{html.escape(h)}</th>'
        for k, h in enumerate(heads)
    )
    body = []
    for row in [*rows, None]:
        cells = _cells(total if row is None else row, kind, row is None)
        title = "" if row is None else html.escape(str(row.get("endpoint") or row.get("instance")))
        style = f"border-top:1px solid {_BORDER};font-weight:bold" if row is None else ""
        tds = "".join(
            f'<td style="{_CELL};{extra}"'
            + (f' title="{title}"' if k == 0 and title else "")
            + f">{html.escape(text)}</td>"
            for k, (text, extra) in enumerate(cells)
        )
        body.append(f'<tr style="{style}">{tds}</tr>')
    plot = latency_svg(series or {}, now=snap.get("time"), window=window) if series else ""
    return (
        f'<div class="gz-static" {STATIC_ATTR}="panel" style="border:1px solid {_BORDER};'
        f'border-radius:6px;padding:6px 10px;color:{_FG};font-size:12px;overflow-x:auto">'
        f'<div style="margin-bottom:4px"><b>{name}</b> <span style="color:{_MUTED}">'
        f"{html.escape(str(snap.get('kind', '')))} \u00b7 strategy "
        f"{html.escape(str(snap.get('strategy', '')))} \u00b7 {queue} queued \u00b7 "
        f"{html.escape(note)} of {_stamp(snap)}</span></div>"
        f'<table style="border-collapse:collapse;margin:0;font-variant-numeric:tabular-nums">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{plot}</div>"
    )


def snapshot_text(snap: dict[str, Any], *, note: str = "snapshot") -> str:
    """The panel's last state as an aligned plain-text table."""
    rows = snap.get("instances", [])
    kind = extra_kind(rows)
    total = aggregate_extras(kind, rows, snap.get("totals", {}))
    table = [_headers(kind)]
    for row in [*rows, None]:
        table.append([t for t, _ in _cells(total if row is None else row, kind, row is None)])
    widths = [max(len(r[k]) for r in table) for k in range(len(table[0]) - 1)]
    lines = [
        f"{snap.get('name', 'pool')} ({snap.get('kind', '')}, strategy "
        f"{snap.get('strategy', '')}) \u00b7 {note} of {_stamp(snap)}"
    ]
    for r in table:
        lines.append(
            "  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=False)) + "  " + r[-1]
        )
    return "\n".join(line.rstrip() for line in lines)
