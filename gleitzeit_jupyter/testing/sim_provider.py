"""The in-memory pool as a simulation drives it: on the loop's virtual clock, recording what
each call saw at the resource (streamed chunks, retries after output, calls begun while the
instance's breaker was not closed) for :mod:`gleitzeit_jupyter.testing.simulation` to judge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from ..hub import CircuitState, ResourceInstance
from .memory import MemoryProvider, MemoryResource

__all__ = ["SimProvider"]


class SimProvider(MemoryProvider):
    """The in-memory pool, on the loop's virtual clock, recording what each call saw."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._loop_time = asyncio.get_running_loop().time
        self.stream_attempts: dict[int, int] = {}
        self.streamed: set[int] = set()  # calls that produced a chunk
        self.retried_after_output: list[int] = []
        self.freed_at: dict[str, float] = {}  # instance id -> when a call on it last ended
        # Calls running on an instance that began while its breaker was not CLOSED, counted
        # here at the resource rather than read from the breaker's own trial count, so a
        # route that skipped the breaker's admission is caught too.
        self.gated: dict[str, int] = {}
        self.gate_violations: list[str] = []
        super().__init__(*args, **kwargs)

    @property
    def clock(self):  # type: ignore[override]
        return self._loop_time

    def _enter(self, instance: ResourceInstance) -> bool:
        """Count a call beginning on ``instance``; True when its breaker was not CLOSED."""
        b = instance.breaker
        assert b is not None
        state = b.recorded_state  # b.state may move it to half-open and dispatch
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.OPEN and (
            b.opened_at is None or self._loop_time() - b.opened_at < b.recovery_timeout
        ):
            self.gate_violations.append(f"a call began on {instance.id} while its breaker was open")
        n = self.gated[instance.id] = self.gated.get(instance.id, 0) + 1
        if n > b.half_open_max:
            self.gate_violations.append(
                f"{n} calls ran on half-open {instance.id}, max {b.half_open_max}"
            )
        return True

    def _leave(self, instance: ResourceInstance, gated: bool) -> None:
        self.freed_at[instance.id] = self._loop_time()
        if gated:
            self.gated[instance.id] -= 1

    async def execute_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        gated = self._enter(instance)
        try:
            return await super().execute_on_resource(instance, method, params)
        finally:
            self._leave(instance, gated)

    async def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        gated = self._enter(instance)
        try:
            async for chunk in self._stream(instance, method, params):
                yield chunk
        finally:
            self._leave(instance, gated)

    async def _stream(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        call = params["call"]
        self.stream_attempts[call] = self.stream_attempts.get(call, 0) + 1
        if call in self.streamed:
            self.retried_after_output.append(call)
        resource: MemoryResource = instance.handle
        if resource.destroyed:
            resource.after_destroy += 1
        async for chunk in super().stream_on_resource(instance, method, params):
            self.streamed.add(call)
            yield chunk
