"""Snapshots of a provider's pool: a JSON-able dict and pandas DataFrames.

Widgets, the labextension and ``provider.metrics()`` all read the pool through here, so they
always agree: whether an instance is *available* (takes calls now), the pool's counts, the
short labels that tell instances apart and how old an instance's last error is are decided
once, in :func:`status`, and every view only draws them. pandas is imported lazily: the hub
itself must not need it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .instance import ResourceStatus
from .metrics import MetricsSummary, merge_summaries

if TYPE_CHECKING:
    from .provider import HubProvider

__all__ = [
    "ERROR_FRESH_S",
    "METRIC_COLUMNS",
    "history_frame",
    "is_available",
    "metrics_frame",
    "short_labels",
    "status",
]

#: Seconds a call's error keeps colouring an instance; older errors are still listed, with
#: their age, but a healthy instance is no longer shown as failing because of them.
ERROR_FRESH_S = 60.0

#: Longest error text a snapshot carries: a server chooses its error bodies, and every view
#: (panels, their hover text, the sidebar, once a second) gets the snapshot whole.
ERROR_TEXT_MAX = 500

_SERVING = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
_SEPARATORS = ":/.-_@"

METRIC_COLUMNS = (
    "instance",
    "endpoint",
    "status",
    "breaker",
    "in_flight",
    "requests",
    "successes",
    "failures",
    "success_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "last_error",
)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _summary_fields(s: MetricsSummary) -> dict[str, Any]:
    return {
        "requests": s.requests,
        "successes": s.successes,
        "failures": s.failures,
        "success_rate": _round(s.success_rate),
        "p50_ms": _round(s.p50_ms),
        "p95_ms": _round(s.p95_ms),
        "p99_ms": _round(s.p99_ms),
        "mean_ms": _round(s.mean_ms),
    }


def _instance_row(provider: HubProvider, inst: Any, window: bool) -> dict[str, Any]:
    m = inst.metrics
    row: dict[str, Any] = {
        "instance": inst.id,
        "endpoint": inst.endpoint,
        "status": inst.status.value if inst.enabled else "drained",
        "breaker": inst.breaker_state.value,
        "in_flight": inst.in_flight,
    }
    row.update(_summary_fields(m.summary(window)))
    row["last_error"] = m.last_error
    row["last_error_at"] = m.last_error_at
    row.update(provider.instance_extras(inst))
    return row


def is_available(inst: Any, breaker: str | None = None) -> bool:
    """Would the pool route a call to ``inst`` now: enabled, healthy (or degraded) and its
    breaker not OPEN. Passive health (a refused call ejects at once) and the breaker make
    this follow call failures, not only health checks."""
    breaker = inst.breaker_state.value if breaker is None else breaker
    return inst.enabled and inst.status in _SERVING and breaker != "open"


def short_labels(names: list[str]) -> dict[str, str]:
    """Names that tell instances apart in a narrow column: the prefix every name shares is
    cut back to a separator and replaced by ``…``, so ``127.0.0.1:11434`` and
    ``127.0.0.1:11435`` read ``…:11434`` and ``…:11435``. The distinguishing part is never
    cut; one name (or names without a shared prefix) stays whole."""
    unique = list(dict.fromkeys(names))
    if len(unique) < 2:
        return {n: n for n in unique}
    prefix = unique[0]
    for name in unique[1:]:
        k = 0
        while k < min(len(prefix), len(name)) and prefix[k] == name[k]:
            k += 1
        prefix = prefix[:k]
    # Cut at the last separator, which stays in the label (":11434", not "11434").
    cut = max((prefix.rfind(c) for c in _SEPARATORS), default=-1)
    if cut <= 0:
        return {n: n for n in unique}
    return {n: "\u2026" + n[cut:] for n in unique}


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= ERROR_TEXT_MAX:
        return text
    return text[: ERROR_TEXT_MAX - 1] + "\u2026"


def _error_age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def status(provider: HubProvider) -> dict[str, Any]:
    instances = provider.instances
    now = time.time()
    labels = short_labels([i.id for i in instances])
    rows = []
    for inst in instances:
        # "instance" (as in metrics()) and "id" (as on ResourceInstance): consumers read either.
        row = {"id": inst.id, **_instance_row(provider, inst, window=False)}
        age = _error_age(row["last_error_at"], now)
        row.update(
            label=labels.get(inst.id, inst.id),
            last_error=_clip(row["last_error"]),
            available=is_available(inst, row["breaker"]),
            last_error_age_s=age,
            error_fresh=age is not None and age < ERROR_FRESH_S,
        )
        row.update(
            health=inst.status.value,
            enabled=inst.enabled,
            origin=inst.origin,
            tags=sorted(inst.tags),
            metadata=dict(inst.metadata),
            recent=_summary_fields(inst.metrics.summary(window=True)),
            # why the last health check failed (None once a check passes again)
            health_error=_clip(provider.health_error(inst.id)),
        )
        rows.append(row)
    totals = _summary_fields(merge_summaries(i.metrics for i in instances))
    breakers = [r["breaker"] for r in rows]
    totals.update(
        instances=len(instances),
        # the one count every view shows ("2/3 available", "LLM 2/3", the ALL row)
        available=sum(1 for r in rows if r["available"]),
        healthy=sum(1 for i in instances if i.enabled and i.status in _SERVING),
        in_flight=sum(i.in_flight for i in instances),
        open_breakers=breakers.count("open"),
        half_open_breakers=breakers.count("half_open"),
    )
    totals.update(provider.pool_extras(instances))
    return {
        "name": provider.name,
        "kind": type(provider).__name__,
        "strategy": provider.strategy,
        "initialized": provider.initialized,
        "time": now,
        "queue": {"waiting": provider.queue_length, "tenants": provider.queue_tenants},
        "instances": rows,
        "totals": totals,
    }


def metrics_frame(provider: HubProvider, window: bool = False):
    import pandas as pd

    instances = provider.instances
    rows = [_instance_row(provider, inst, window) for inst in instances]
    total: dict[str, Any] = {
        "instance": "ALL",
        "endpoint": "",
        "status": "",
        "breaker": "",
        "in_flight": sum(i.in_flight for i in instances),
    }
    total.update(_summary_fields(merge_summaries((i.metrics for i in instances), window)))
    errors = [r for r in rows if r["last_error_at"] is not None]
    latest = max(errors, key=lambda r: r["last_error_at"]) if errors else None
    total["last_error"] = latest["last_error"] if latest else None
    total["last_error_at"] = latest["last_error_at"] if latest else None
    total.update(provider.pool_extras(instances))
    rows.append(total)
    frame = pd.DataFrame(rows)
    leading = [c for c in METRIC_COLUMNS if c in frame.columns]
    frame = frame[leading + [c for c in frame.columns if c not in leading]]
    if "last_error_at" in frame.columns:
        frame["last_error_at"] = pd.to_datetime(frame["last_error_at"], unit="s", utc=True)
    return frame


def history_frame(provider: HubProvider):
    import pandas as pd

    rows = [
        {"instance": inst.id, **row}
        for inst in provider.instances
        for row in inst.metrics.history_rows()
    ]
    columns = ["time", "instance", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "mean_ms"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    return frame.sort_values(["time", "instance"], ignore_index=True)
