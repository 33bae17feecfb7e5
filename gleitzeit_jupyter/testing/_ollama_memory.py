"""Which models a stand-in holds in memory: cold loads, reference counts, eviction.

Like Ollama's scheduler: a model is loaded once however many calls wait for it; a server
holds at most ``max_loaded`` models (OLLAMA_MAX_LOADED_MODELS); loading one more evicts the
least recently used model that no running call uses, waiting for one to become idle if all
are busy. Loads happen one at a time.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Iterable

__all__ = ["WARM_LOAD_NS", "ModelMemory"]

#: load_duration a warm model still reports (Ollama's, for a model already in memory)
WARM_LOAD_NS = 150_000


class ModelMemory:
    def __init__(self, loaded: Iterable[str], max_loaded: int | None, load_time: float) -> None:
        self._lru: OrderedDict[str, None] = OrderedDict((m, None) for m in loaded)
        self.max_loaded = max_loaded
        self.load_time = load_time
        self.loads: Counter[str] = Counter()  # cold loads per model
        self.evictions: Counter[str] = Counter()
        self._users: Counter[str] = Counter()  # running calls per model
        self._loading: asyncio.Lock | None = None

    @property
    def loaded(self) -> set[str]:
        return set(self._lru)

    @loaded.setter
    def loaded(self, names: Iterable[str]) -> None:
        self._lru = OrderedDict((m, None) for m in names)

    def ordered(self) -> list[str]:
        """Loaded models, most recently used first (as /api/ps lists them)."""
        return list(reversed(self._lru))

    def unload(self, model: str) -> None:
        self._lru.pop(model, None)

    async def acquire(self, model: str) -> int:
        """Hold ``model`` in memory for one call, loading it if cold; returns load_duration
        in ns. Pair with :meth:`release`."""
        if model in self._lru:
            self._use(model)
            return WARM_LOAD_NS
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if model in self._lru:  # another call loaded it while this one waited
                self._use(model)
                return WARM_LOAD_NS
            await self._make_room()
            if self.load_time:
                await asyncio.sleep(self.load_time)
            self._lru[model] = None
            self.loads[model] += 1
            self._use(model)
            return int(self.load_time * 1e9) or WARM_LOAD_NS

    def release(self, model: str) -> None:
        self._users[model] -= 1
        if self._users[model] <= 0:
            del self._users[model]

    def _use(self, model: str) -> None:
        self._lru.move_to_end(model)
        self._users[model] += 1

    async def _make_room(self) -> None:
        while self.max_loaded is not None and len(self._lru) >= self.max_loaded:
            idle = next((m for m in self._lru if not self._users[m]), None)
            if idle is not None:
                del self._lru[idle]
                self.evictions[idle] += 1
                continue
            # Every loaded model is in use: Ollama waits for one to finish. Polled, since
            # releases come from many calls and a stand-in need not be clever about it.
            await asyncio.sleep(0.005)
