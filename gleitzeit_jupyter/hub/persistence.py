"""Save a pool to a SQLite file and bring it back later (after a kernel restart, tomorrow).

What is kept per pool: its strategy; per instance its config, endpoint, origin, tags and
metadata, whether it was drained, its counters (requests, successes, failures, last error), its
all-time latency sketch (so p50/p95/p99 come back exact to the sketch's 1 % bound) and its
latency history (the per-bucket rows of ``metrics_history()``). Stdlib ``sqlite3`` only; no
Jupyter, no pandas.

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
import json
import logging
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .metrics import HISTORY_LIMIT, export_sketch, import_sketch

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

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pools (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, strategy TEXT NOT NULL, saved_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS instances (
    pool TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL, endpoint TEXT NOT NULL,
    origin TEXT NOT NULL, enabled INTEGER NOT NULL, tags TEXT NOT NULL, metadata TEXT NOT NULL,
    config_type TEXT NOT NULL, config TEXT NOT NULL, counters TEXT NOT NULL, sketch TEXT,
    position INTEGER NOT NULL,
    PRIMARY KEY (pool, id)
);
CREATE TABLE IF NOT EXISTS history (
    pool TEXT NOT NULL, instance TEXT NOT NULL, time REAL NOT NULL, requests INTEGER NOT NULL,
    errors INTEGER NOT NULL, p50_ms REAL, p95_ms REAL, p99_ms REAL, mean_ms REAL,
    PRIMARY KEY (pool, instance, time)
);
"""

_HISTORY_KEYS = ("time", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "mean_ms")


@dataclass
class InstanceState:
    id: str
    key: str
    endpoint: str
    origin: str
    enabled: bool
    tags: list[str]
    metadata: dict[str, Any]
    config_type: str
    config: Any  # JSON-encoded form (see _encode)
    counters: dict[str, Any]
    sketch: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PoolState:
    name: str
    kind: str
    strategy: str
    saved_at: float
    instances: list[InstanceState] = field(default_factory=list)


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
                history=[{k: row.get(k) for k in _HISTORY_KEYS} for row in history],
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


# ------------------------------------------------------------------ the file
def _connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=10)
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        conn.commit()
    elif int(row[0]) > SCHEMA_VERSION:
        conn.close()
        raise ValueError(f"{path} was written by a newer gleitzeit-jupyter (schema {row[0]})")
    return conn


def write(path: str | Path, states: PoolState | list[PoolState]) -> Path:
    """Store pools in the SQLite file ``path`` (created if missing); each pool's old rows are
    replaced, other pools in the file are kept. Blocking: run it off the event loop."""
    states = [states] if isinstance(states, PoolState) else list(states)
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(target)
    try:
        with conn:
            for s in states:
                for table, col in (("pools", "name"), ("instances", "pool"), ("history", "pool")):
                    conn.execute(f"DELETE FROM {table} WHERE {col} = ?", (s.name,))
                conn.execute(
                    "INSERT INTO pools VALUES (?, ?, ?, ?)",
                    (s.name, s.kind, s.strategy, s.saved_at),
                )
                for pos, i in enumerate(s.instances):
                    conn.execute(
                        "INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            s.name,
                            i.id,
                            i.key,
                            i.endpoint,
                            i.origin,
                            int(i.enabled),
                            json.dumps(i.tags),
                            json.dumps(i.metadata),
                            i.config_type,
                            json.dumps(i.config),
                            json.dumps(i.counters),
                            json.dumps(i.sketch) if i.sketch else None,
                            pos,
                        ),
                    )
                    conn.executemany(
                        "INSERT OR REPLACE INTO history VALUES (?,?,?,?,?,?,?,?,?)",
                        [(s.name, i.id, *(r.get(k) for k in _HISTORY_KEYS)) for r in i.history],
                    )
    finally:
        conn.close()
    return target


def read(path: str | Path) -> dict[str, PoolState]:
    """Every pool stored in ``path``, by name. Blocking: run it off the event loop."""
    target = Path(path).expanduser()
    if not target.exists():
        raise UserError(f"no saved pools at {target}", hint="save first: %gleitzeit save PATH")
    conn = _connect(target)
    try:
        pools: dict[str, PoolState] = {}
        for name, kind, strategy, saved_at in conn.execute(
            "SELECT name, kind, strategy, saved_at FROM pools ORDER BY name"
        ):
            pools[name] = PoolState(name, kind, strategy, saved_at)
        cols = (
            "pool, id, key, endpoint, origin, enabled, tags, metadata, config_type, config,"
            " counters, sketch"
        )
        found: dict[tuple[str, str], InstanceState] = {}
        for row in conn.execute(f"SELECT {cols} FROM instances ORDER BY pool, position"):
            (
                pool,
                ident,
                key,
                endpoint,
                origin,
                enabled,
                tags,
                metadata,
                config_type,
                config,
                counters,
                sketch,
            ) = row
            if pool not in pools:
                continue
            inst = InstanceState(
                id=ident,
                key=key,
                endpoint=endpoint,
                origin=origin,
                enabled=bool(enabled),
                tags=json.loads(tags),
                metadata=json.loads(metadata),
                config_type=config_type,
                config=json.loads(config),
                counters=json.loads(counters),
                sketch=json.loads(sketch) if sketch else None,
            )
            pools[pool].instances.append(inst)
            found[(pool, ident)] = inst
        for row in conn.execute(
            "SELECT pool, instance, time, requests, errors, p50_ms, p95_ms, p99_ms, mean_ms"
            " FROM history ORDER BY pool, instance, time"
        ):
            inst = found.get((row[0], row[1]))
            if inst is not None:
                inst.history.append(dict(zip(_HISTORY_KEYS, row[2:], strict=True)))
        return pools
    finally:
        conn.close()


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
