"""Save a pool to a SQLite file and bring it back later (after a kernel restart, tomorrow).

What is kept per pool: its strategy; per instance its config, endpoint, origin, tags and
metadata, whether it was drained, its counters (requests, successes, failures, last error), its
all-time latency sketch (so p50/p95/p99 come back exact to the sketch's 1 % bound) and its
latency history (the per-bucket rows of ``metrics_history()``). This module captures a pool
and merges a saved one back; the SQLite file itself is :mod:`gleitzeit_jupyter.hub.savefile`.
No Jupyter, no pandas.

    await save_pool(provider, "pool.sqlite")           # on the provider's loop
    report = await load_pool(provider, "pool.sqlite")  # re-adds missing instances, merges metrics

Saving a pool replaces that pool's rows in the file and leaves other pools alone, so one file
can hold the Ollama pool and the sandbox pool. Loading *adds* yesterday's counters and history
to what an instance has today (history rows are merged by time and stay bounded).

Configs are stored as JSON: a dataclass config as its fields (sets and tuples tagged), other
configs as plain JSON values. On load a dataclass config is rebuilt only with the provider's
own ``resource_config_class`` (nothing else is imported from a file's contents).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .metrics import HISTORY_LIMIT, export_sketch, import_sketch
from .savefile import HISTORY_KEYS, SCHEMA_VERSION, InstanceState, PoolState, read, write

if TYPE_CHECKING:
    from .instance import ResourceInstance
    from .provider import HubProvider

__all__ = [
    "SCHEMA_VERSION",
    "InstanceState",
    "PoolState",
    "RestoreReport",
    "capture",
    "load_pool",
    "read",
    "restore",
    "save_pool",
    "write",
]

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    pool: str
    added: list[str] = field(default_factory=list)  # instances created again
    merged: list[str] = field(default_factory=list)  # metrics merged into an existing one
    failed: dict[str, str] = field(default_factory=dict)  # key -> why it could not come back
    history_rows: int = 0
    already: list[str] = field(default_factory=list)  # this save was merged in before
    # the save shares some merged history with this instance: not merged (no double count)
    overlapping: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.pool}: {len(self.added) + len(self.merged)} instance(s) restored"]
        if self.added:
            parts.append(f"re-created {', '.join(self.added)}")
        if self.already:
            parts.append(f"metrics of {', '.join(self.already)} were already loaded from this save")
        if self.overlapping:
            parts.append(
                f"metrics of {', '.join(self.overlapping)} were not merged: the save already"
                " contains some of this pool's own counts"
            )
        if self.failed:
            parts.append(
                "could not restore " + ", ".join(f"{k} ({v})" for k, v in self.failed.items())
            )
        parts.append(f"{self.history_rows} history rows")
        return "; ".join(parts)


# ------------------------------------------------------------------ config encoding
def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, frozenset):
        return {"__frozenset__": sorted((_encode(v) for v in value), key=repr)}
    if isinstance(value, set):
        return {"__set__": sorted((_encode(v) for v in value), key=repr)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return _encode(value.value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__frozenset__"}:
            return frozenset(_decode(v) for v in value["__frozenset__"])
        if set(value) == {"__set__"}:
            return {_decode(v) for v in value["__set__"]}
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _rebuild_config(provider: HubProvider, state: InstanceState) -> Any:
    data = _decode(state.config)
    cls = provider.resource_config_class
    if state.config_type.startswith("dataclass:"):
        wanted = state.config_type.removeprefix("dataclass:")
        if cls is None or f"{cls.__module__}:{cls.__qualname__}" != wanted:
            raise ValueError(f"config type {wanted} is not this provider's config class")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: v for k, v in data.items() if k in names})
    return data


# ------------------------------------------------------------------ capture / restore
def capture(provider: HubProvider) -> PoolState:
    """Everything :func:`write` stores about ``provider``. Call on the provider's loop."""
    state = PoolState(
        name=provider.name,
        kind=type(provider).__name__,
        strategy=provider.strategy,
        saved_at=time.time(),
    )
    for inst in provider.instances:
        config = inst.config
        is_dc = dataclasses.is_dataclass(config) and not isinstance(config, type)
        m = inst.metrics
        counters = m.dump() if m is not None else {}
        history = counters.pop("history", [])
        state.instances.append(
            InstanceState(
                id=inst.id,
                key=provider.resource_key(config),
                endpoint=inst.endpoint,
                origin=inst.origin,
                enabled=inst.enabled,
                tags=sorted(map(str, inst.tags)),
                metadata=_encode(dict(inst.metadata)),
                config_type=f"dataclass:{_type_name(config)}" if is_dc else "json",
                config=_encode(config),
                counters=counters,
                sketch=export_sketch(m.all_time) if m is not None else None,
                history=[{k: row.get(k) for k in HISTORY_KEYS} for row in history],
            )
        )
    return state


def _merge_metrics(inst: ResourceInstance, saved: InstanceState) -> int:
    m = inst.metrics
    assert m is not None
    c = saved.counters
    m.requests += int(c.get("requests", 0))
    m.successes += int(c.get("successes", 0))
    m.failures += int(c.get("failures", 0))
    m.user_errors += int(c.get("user_errors", 0))
    if c.get("last_error") and (
        m.last_error_at is None or (c.get("last_error_at") or 0) > m.last_error_at
    ):
        m.last_error = c["last_error"]
        m.last_error_at = c.get("last_error_at")
    if saved.sketch:
        m.absorb(import_sketch(saved.sketch))
    # History: yesterday's rows before today's, one row per bucket start, bounded as before.
    rows = {round(r["time"], 6): r for r in saved.history}
    for r in m.history:
        rows[round(r["time"], 6)] = r
    merged = [rows[t] for t in sorted(rows)]
    limit = m.history.maxlen or HISTORY_LIMIT
    m.history = deque(merged[-limit:], maxlen=limit)
    return len(saved.history)


async def restore(
    provider: HubProvider, state: PoolState, *, create: bool = True, strategy: bool = True
) -> RestoreReport:
    """Bring a saved pool back into ``provider`` (on its loop): instances it lacks are added
    again (``create=True``), then each instance gets its saved counters, latency sketch and
    history merged in, its drained flag and origin; the strategy is restored too."""
    report = RestoreReport(pool=provider.name)
    by_key = {provider.resource_key(i.config): i for i in provider.instances}
    by_id = {i.id: i for i in provider.instances}
    for saved in state.instances:
        inst = by_key.get(saved.key) or by_id.get(saved.id)
        if inst is None:
            if not create:
                report.failed[saved.key] = "not in the pool"
                continue
            try:
                config = _rebuild_config(provider, saved)
                inst = await provider.add_resource(config)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                report.failed[saved.key] = str(exc) or type(exc).__name__
                continue
            if saved.origin in ("scaled", "discovered"):
                inst.origin = saved.origin  # reapable / re-checked by discovery as before
            inst.tags.update(saved.tags)
            for k, v in _decode(saved.metadata).items():
                inst.metadata.setdefault(k, v)
            report.added.append(inst.id)
        else:
            report.merged.append(inst.id)
        # Counters already in this instance's metrics (the same file loaded twice, or a save
        # this kernel made itself) are not counted again.
        lineage = set(saved.counters.get("lineage") or ())
        lineage = lineage or {f"{state.name}:{state.saved_at}:{saved.id}"}  # older files
        metrics = inst.metrics
        if metrics is None:
            pass
        elif lineage <= metrics.lineage:
            report.already.append(inst.id)
        elif lineage & metrics.lineage:
            # The save holds counters already here plus others (a pool that loaded this
            # one's save, then ran more calls). Totals cannot be split by lineage, so adding
            # them would count the shared calls twice: keep this instance's own numbers.
            report.overlapping.append(inst.id)
        else:
            report.history_rows += _merge_metrics(inst, saved)
            metrics.lineage |= lineage
        if not saved.enabled and inst.enabled:
            provider.drain(inst.id)
    if strategy and state.strategy != provider.strategy:
        try:
            provider.set_strategy(state.strategy)
        except Exception as exc:  # a strategy this version does not know
            report.failed["strategy"] = str(exc)
    provider.mark_dirty()  # let panels and the sidebar pick the restored numbers up
    return report


async def save_pool(provider: HubProvider, path: str | Path) -> Path:
    """Capture ``provider`` (call on its loop) and write it to ``path`` off the loop."""
    state = capture(provider)
    return await asyncio.to_thread(write, path, state)


async def load_pool(
    provider: HubProvider, path: str | Path, *, name: str | None = None, create: bool = True
) -> RestoreReport:
    """Restore the pool saved under ``name`` (default: the provider's name) from ``path``."""
    pools = await asyncio.to_thread(read, path)
    key = name or provider.name
    if key not in pools:
        saved = ", ".join(pools) or "none"
        raise UserError(f"no pool {key!r} saved in {path}", hint=f"saved pools: {saved}")
    return await restore(provider, pools[key], create=create)
