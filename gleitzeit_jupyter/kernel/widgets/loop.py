"""Which event loop runs a provider, and calling onto it from another thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def find_loop(provider: Any) -> asyncio.AbstractEventLoop | None:
    """The loop a provider runs on: the kernel runtime's, else that of its background tasks."""
    try:
        from ..runtime import current_runtime

        rt = current_runtime()
    except ImportError:  # pragma: no cover - same package
        rt = None
    if rt is not None and any(p is provider for p in rt.providers.values()):
        return rt.loop
    for task in getattr(provider, "_tasks", []) or []:
        try:
            return task.get_loop()
        except AttributeError:  # pragma: no cover - very old asyncio
            continue
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], timeout: float = 10.0):
    """Run ``fn()`` on ``loop`` and return its result (directly when already there)."""
    if on_loop_thread(loop) or not loop.is_running():
        return fn()

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)
