"""Streaming runs: ``stream("python/execute", ...)`` yields output while the code runs.

Chunks are ``{"stdout": text}`` / ``{"stderr": text}`` as the supervisor reads them (capped like
the result), ``{"output": {type, data}}`` for each ``display()`` (sanitised, in its place among
the text), then one ``{"done": True, **result}`` whose ``outputs`` start with the
``streamed_outputs`` already yielded. Sessions pin their container here too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from ...hub import ResourceInstance
from .sessions import SessionLeases

__all__ = ["StreamingMixin"]


class StreamingMixin:
    """Mixed into :class:`PythonProvider` (before ``HubProvider``, whose ``stream`` it wraps)."""

    # provided by PythonProvider / HubProvider
    sessions: SessionLeases
    instances: list[ResourceInstance]
    execute_on_resource: Callable[..., Coroutine[Any, Any, dict[str, Any]]]

    #: Tells the %%sandbox magic that ``stream("python/execute", ...)`` yields
    #: ``{"stdout"|"stderr": text}`` chunks, then ``{"done": True, **result}``.
    streams_output = True

    async def stream(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        strategy: str | None = None,
        instance: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        params = {} if params is None else params
        session = params.get("session")
        pin_session = session is not None and instance is None
        lock = self.sessions.lock(str(session)) if pin_session else contextlib.nullcontext()
        async with lock:
            if pin_session:
                instance = self.sessions.instance_of(str(session))
                if instance is not None and instance not in {i.id for i in self.instances}:
                    self.sessions.release(str(session))  # its container left: start afresh
                    instance = None
            inner = super().stream(  # type: ignore[misc]  # HubProvider's, by the MRO
                method,
                params,
                strategy=strategy,
                instance=instance,
                timeout=timeout,
            )
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                # Close the hub's generator now, not whenever it is collected: that releases
                # the container and stops the run before the caller's next call lands on it.
                await inner.aclose()

    async def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        task = asyncio.create_task(
            self.execute_on_resource(instance, method, params, on_chunk=queue.put_nowait)
        )
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (chunk := await queue.get()) is not None:
                yield {k: v for k, v in chunk.items() if k in ("stdout", "stderr", "output")}
            yield {"done": True, **task.result()}  # raises what the run raised
        finally:
            if not task.done():  # the consumer stopped reading: stop the run too
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
