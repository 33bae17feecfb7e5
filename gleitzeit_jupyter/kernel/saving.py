"""``%gleitzeit save PATH`` / ``%gleitzeit load PATH``: the kernel's pools in a SQLite file.

Thin glue over :mod:`gleitzeit_jupyter.hub.persistence`: saving writes every running pool;
loading starts the pools named in the file (the Ollama pool and the default sandbox pool are
created from the current configuration if they are not running yet), re-adds yesterday's
instances and merges their counters, latency percentiles and history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hub import persistence

__all__ = ["load_runtime", "save_runtime"]


def save_runtime(rt: Any, path: str | Path) -> str:
    """Save every running pool of ``rt`` to ``path``; returns a one-line summary."""
    providers = rt.providers
    if not providers:
        return "nothing to save: no pools are running yet"
    target = Path(path).expanduser()
    parts = []
    for name, provider in providers.items():
        rt.run(persistence.save_pool(provider, target), timeout=60)
        n = len(provider.instances)
        parts.append(f"{name} ({n} instance{'' if n == 1 else 's'})")
    return f"saved {', '.join(parts)} to {target}"


def _provider_for(rt: Any, name: str) -> Any:
    provider = rt.providers.get(name)
    if provider is not None:
        return provider
    if name == "ollama":
        return rt.ollama()
    if name == "openai":
        return rt.openai()
    if name == "sandbox":
        return rt.sandbox()
    return None


def load_runtime(rt: Any, path: str | Path) -> str:
    """Restore the pools saved in ``path`` into ``rt``; returns a summary (one line a pool)."""
    target = Path(path).expanduser()
    pools = persistence.read(target)
    if not pools:
        return f"{target} holds no saved pools"
    lines = []
    for name, state in pools.items():
        provider = _provider_for(rt, name)
        if provider is None:
            lines.append(f"{name}: skipped (start that pool first, then load again)")
            continue
        report = rt.run(persistence.restore(provider, state), timeout=300)
        lines.append(str(report))
    return "\n".join(lines)
