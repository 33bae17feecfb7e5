"""Cell texts: milliseconds, rates, counts, the provider's extra column, error lines."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

DASH = "\u2013"


def fmt_ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return DASH
    pct = value * 100
    return "100 %" if pct >= 99.995 else f"{pct:.1f} %"


def fmt_int(value: Any) -> str:
    return DASH if value is None else f"{int(value):,}"


def extra_kind(rows: Iterable[dict[str, Any]]) -> str | None:
    for row in rows:
        if "tokens_per_s" in row:
            return "tokens"
        if "runs" in row or "recycled" in row:
            return "runs"
    return None


def fmt_extra(kind: str | None, row: dict[str, Any]) -> str:
    if kind == "tokens":
        tps = row.get("tokens_per_s")
        return DASH if tps is None else f"{tps:,.1f}"
    if kind == "runs":
        return f"{fmt_int(row.get('runs', 0))} / {fmt_int(row.get('recycled', 0))}"
    return ""


def aggregate_extras(
    kind: str | None, rows: list[dict[str, Any]], totals: dict[str, Any]
) -> dict[str, Any]:
    """The pool's totals plus the provider extras summed (runs, recycled) or averaged
    (tokens/s, a per-instance speed)."""
    out = dict(totals)
    if kind == "runs":
        out["runs"] = sum(r.get("runs") or 0 for r in rows)
        out["recycled"] = sum(r.get("recycled") or 0 for r in rows)
    elif kind == "tokens":
        speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s") is not None]
        out["tokens_per_s"] = sum(speeds) / len(speeds) if speeds else None
    return out


def fmt_age(seconds: float | None) -> str:
    """``12 s ago``, ``4 min ago``, ``2 h ago``."""
    if seconds is None:
        return DASH
    if seconds < 90:
        return f"{max(0, round(seconds))} s ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    return f"{round(seconds / 3600)} h ago"


def shorten(text: str | None, limit: int = 90) -> str:
    if not text:
        return ""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
