"""An asyncio event loop on a virtual clock, for simulations over in-memory resources.

:class:`VirtualTimeLoop` jumps its clock to the next timer instead of sleeping, so minutes of
pool time take milliseconds and a run replays exactly. It has no I/O. A wait with no timer
set is a deadlock, and too many loop passes without time moving is a livelock; both raise
:class:`InvariantViolation`.
"""

from __future__ import annotations

import asyncio
import math
import selectors
from typing import Any

__all__ = ["SPIN_LIMIT", "InvariantViolation", "VirtualTimeLoop"]

SPIN_LIMIT = 100_000  # loop passes without virtual time moving before it is a livelock


class InvariantViolation(AssertionError):
    pass


class _NoIO(selectors.BaseSelector):
    """A selector with nothing to wait for: ``select(t)`` advances the loop's clock by t."""

    def __init__(self, loop: VirtualTimeLoop):
        self._loop = loop
        self._map: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise InvariantViolation("deadlock: every task waits and no timer is set")
        self._loop.advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock (no I/O: in-memory resources only)."""

    def __init__(self) -> None:
        self._now = 0.0
        self._spins = 0
        super().__init__(selector=_NoIO(self))

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            # at least one tick, as a real clock would, however small the wait
            self._now = max(self._now + seconds, math.nextafter(self._now, math.inf))
            self._spins = 0
            return
        # Work without time passing. Far too much of it is a livelock (tasks waking each
        # other forever), which real time would hide as a busy CPU.
        self._spins += 1
        if self._spins > SPIN_LIMIT:
            raise InvariantViolation(f"livelock: {SPIN_LIMIT} loop passes at t={self._now:.3f}")
