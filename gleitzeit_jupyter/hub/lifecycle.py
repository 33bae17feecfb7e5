"""The lifecycle of a pool: stopped → starting → running → stopping → stopped.

Each start begins a new *generation*. Work that outlives the generation it began in (a
resource whose creation was still running when ``shutdown()`` came, a call that reserved an
instance just before) checks its generation where it registers a resource or reserves an
instance, so nothing from a stopped pool is ever served.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Lifecycle", "PoolState"]


class PoolState(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


_NEXT = {
    PoolState.STOPPED: (PoolState.STARTING,),
    PoolState.STARTING: (PoolState.RUNNING, PoolState.STOPPING),
    PoolState.RUNNING: (PoolState.STOPPING,),
    PoolState.STOPPING: (PoolState.STOPPED,),
}


class Lifecycle:
    def __init__(self) -> None:
        self.state = PoolState.STOPPED
        self.generation = 0

    def _move(self, new: PoolState) -> None:
        if new not in _NEXT[self.state]:
            raise RuntimeError(f"pool cannot go from {self.state.value} to {new.value}")
        self.state = new

    def start(self) -> int:
        """Begin a new generation; returns it."""
        self._move(PoolState.STARTING)
        self.generation += 1
        return self.generation

    def started(self) -> None:
        self._move(PoolState.RUNNING)

    def stop(self) -> None:
        self._move(PoolState.STOPPING)

    def stopped(self) -> None:
        self._move(PoolState.STOPPED)

    @property
    def running(self) -> bool:
        return self.state is PoolState.RUNNING

    def current(self, generation: int) -> bool:
        """Is work begun in ``generation`` still welcome (the pool starting or running in it)?"""
        return generation == self.generation and self.state in (
            PoolState.STARTING,
            PoolState.RUNNING,
        )
