"""Snapshots of a provider's pool: a JSON-able dict and pandas DataFrames.

Widgets, the labextension and ``provider.metrics()`` all read the pool through here, so they
always agree. pandas is imported lazily: the hub itself must not need it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .instance import ResourceStatus
from .metrics import MetricsSummary, merge_summaries

if TYPE_CHECKING:
    from .provider import HubProvider

__all__ = ["METRIC_COLUMNS", "history_frame", "metrics_frame", "status"]

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


def status(provider: HubProvider) -> dict[str, Any]:
    instances = provider.instances
    rows = []
    for inst in instances:
        # "instance" (as in metrics()) and "id" (as on ResourceInstance): consumers read either.
        row = {"id": inst.id, **_instance_row(provider, inst, window=False)}
        row.update(
            health=inst.status.value,
            enabled=inst.enabled,
            origin=inst.origin,
            tags=sorted(inst.tags),
            metadata=dict(inst.metadata),
            recent=_summary_fields(inst.metrics.summary(window=True)),
            # why the last health check failed (None once a check passes again)
            health_error=provider.health_error(inst.id),
        )
        rows.append(row)
    totals = _summary_fields(merge_summaries(i.metrics for i in instances))
    totals.update(
        instances=len(instances),
        healthy=sum(
            1
            for i in instances
            if i.enabled and i.status in (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
        ),
        in_flight=sum(i.in_flight for i in instances),
        open_breakers=sum(1 for i in instances if i.breaker_state.value != "closed"),
    )
    totals.update(provider.pool_extras(instances))
    return {
        "name": provider.name,
        "kind": type(provider).__name__,
        "strategy": provider.strategy,
        "initialized": provider.initialized,
        "time": time.time(),
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
