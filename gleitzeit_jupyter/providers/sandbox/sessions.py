"""Session leases: ``session="name"`` binds one container to one notebook-side session.

The container's session worker keeps its namespace between runs (a remote REPL). A leased
container serves only its session; the lease ends when the session is reset (``python/reset``:
it holds nothing then), when the container is replaced (its state is gone then, and the next
run says so with ``session_new``) or when the provider shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ...hub import NoResourceAvailable

__all__ = ["SessionLeases"]

#: execute(method, params, strategy, instance, timeout) on the hub's call path
HubExecute = Callable[
    [str, dict[str, Any], "str | None", "str | None", "float | None"], Awaitable[dict[str, Any]]
]


class SessionLeases:
    def __init__(self, reserve: Callable[[str, bool], None] | None = None) -> None:
        # reserve(instance_id, leased): lets the provider take a leased container out of
        # unpinned routing (and put it back).
        self._reserve = reserve or (lambda _id, _leased: None)
        self._by_session: dict[str, str] = {}
        self._by_instance: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def owner_of(self, instance_id: str) -> str | None:
        return self._by_instance.get(instance_id)

    def instance_of(self, session: str) -> str | None:
        return self._by_session.get(session)

    def bind(self, session: str, instance_id: str) -> bool:
        """Lease ``instance_id`` to ``session``; True when this is a new lease."""
        if self._by_session.get(session) == instance_id:
            return False
        self.release(session)
        self._by_session[session] = instance_id
        self._by_instance[instance_id] = session
        self._reserve(instance_id, True)
        return True

    def release(self, session: str) -> None:
        instance_id = self._by_session.pop(session, None)
        if instance_id is not None:
            self._by_instance.pop(instance_id, None)
            self._reserve(instance_id, False)

    def drop_instance(self, instance_id: str) -> None:
        session = self._by_instance.pop(instance_id, None)
        if session is not None:
            self._by_session.pop(session, None)
            self._reserve(instance_id, False)

    def clear(self) -> None:
        self._by_session.clear()
        self._by_instance.clear()
        self._locks.clear()

    def lock(self, session: str) -> asyncio.Lock:
        """One call per session at a time: a second cell must not race the first for a lease."""
        return self._locks.setdefault(session, asyncio.Lock())

    async def call(
        self,
        execute: HubExecute,
        session: str,
        method: str,
        params: dict[str, Any],
        strategy: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        async with self.lock(session):
            pinned = self._by_session.get(session)
            if pinned is None and method == "python/reset":
                return {"reset": False, "session": session}  # nothing to restart
            if pinned is not None:
                try:
                    result = await execute(method, params, strategy, pinned, timeout)
                    if method == "python/reset":
                        # A reset session holds nothing: its container goes back to the pool
                        # (a session started per cell would otherwise hold one for good).
                        self.release(session)
                    return result
                except NoResourceAvailable:
                    self.release(session)  # its container left the pool: start afresh
                    if method == "python/reset":
                        return {"reset": False, "session": session}
            # A new lease: the hub routes among unleased containers (scaling up if needed);
            # execute_on_resource binds the one it got.
            return await execute(method, params, strategy, None, timeout)
