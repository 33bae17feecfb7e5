"""Fixtures of the hub's tests: an in-memory pool factory, shut down after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hub_helpers import QUIET

from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


@pytest.fixture
async def pool() -> AsyncIterator[Callable[..., Any]]:
    """``await pool(["a", "b"], **options)``: an initialized MemoryProvider shut down after
    the test. Names may be MemoryConfig objects for per-instance settings."""
    made: list[MemoryProvider] = []

    async def make(names=(), **options: Any) -> MemoryProvider:
        configs = [n if isinstance(n, MemoryConfig) else MemoryConfig(n) for n in names]
        for k, v in QUIET.items():
            options.setdefault(k, v)
        p = MemoryProvider(configs, **options)
        made.append(p)
        await p.initialize()
        return p

    yield make
    for p in made:
        await p.shutdown()
