"""The SQLite file saved pools live in: its schema, and the pool states it stores and reads.

One file can hold several pools (the Ollama pool and the sandbox pool); writing a pool replaces
that pool's rows and leaves the others alone. Stdlib ``sqlite3`` only. What goes into a
:class:`PoolState` and how it is merged back into a running pool is
:mod:`gleitzeit_jupyter.hub.persistence`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["HISTORY_KEYS", "SCHEMA_VERSION", "InstanceState", "PoolState", "read", "write"]

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

HISTORY_KEYS = ("time", "requests", "errors", "p50_ms", "p95_ms", "p99_ms", "mean_ms")


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
    config: Any  # JSON-encoded form (see persistence._encode)
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
                        [(s.name, i.id, *(r.get(k) for k in HISTORY_KEYS)) for r in i.history],
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
                inst.history.append(dict(zip(HISTORY_KEYS, row[2:], strict=True)))
        return pools
    finally:
        conn.close()
