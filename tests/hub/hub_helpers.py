"""Helpers shared by the hub's tests (imported as ``hub_helpers``; tests/ is no package)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gleitzeit_jupyter.hub import HubEvent
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider, MemoryResource

# Background loops slow enough not to interfere unless a test asks for them.
QUIET = {"health_check_interval": 60.0, "discovery_interval": 60.0}


def cfgs(*names: str, **fields: Any) -> list[MemoryConfig]:
    return [MemoryConfig(n, **fields) for n in names]


def res(p: MemoryProvider, name: str) -> MemoryResource:
    return p.resources[name]


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``predicate`` every few ms; fail the test if it is still false after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


class Recorder:
    """An event subscriber that keeps every event."""

    def __init__(self) -> None:
        self.events: list[HubEvent] = []

    def __call__(self, event: HubEvent) -> None:
        self.events.append(event)

    def of(self, kind: str, instance_id: str | None = None) -> list[tuple[Any, Any]]:
        return [
            (getattr(e.old, "value", e.old), getattr(e.new, "value", e.new))
            for e in self.events
            if e.kind == kind and (instance_id is None or e.instance_id == instance_id)
        ]
