"""Waiting room for calls when no instance can take them now: fair across tenants, by
priority within a tenant, and without head-of-line blocking.

The queue does not wake waiters to race for a slot: :meth:`FairQueue.dispatch` asks each
waiter, in fair order, to route itself (``route()`` reserves an instance and returns the
reservation, returns None to keep waiting, or returns an error to fail with) and hands the
reservation over in the waiter's future. A waiter nobody ahead of it can use a free slot for
is served at once, whatever waits before it; a waiter no instance can ever serve fails at once.

Tenants are served round-robin, so a tenant with a thousand queued calls cannot starve a tenant
with one. Within a tenant, higher ``priority`` goes first, then arrival order.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .errors import NoResourceAvailable

__all__ = ["FairQueue", "Waiter"]


class Waiter:
    __slots__ = ("future", "key", "route", "tenant")

    def __init__(
        self, tenant: str, key: tuple[int, int], route: Callable[[], Any], future: asyncio.Future
    ):
        self.tenant = tenant
        self.key = key  # (-priority, arrival): the order within the tenant
        self.route = route
        self.future = future

    def __lt__(self, other: Waiter) -> bool:
        return self.key < other.key


class FairQueue:
    def __init__(self, max_queue: int = 1000, fair: bool = True):
        self.max_queue = max_queue
        self.fair = fair  # without sharing every call is one tenant: plain priority FIFO
        self._tenants: OrderedDict[str, list[Waiter]] = OrderedDict()
        self._seq = itertools.count()
        self._size = 0
        self._dispatching = False
        self._again: bool | str = False  # a dispatch was asked for during one

    def __len__(self) -> int:
        return self._size

    @property
    def tenants(self) -> int:
        return len(self._tenants)

    def push(self, tenant: str, priority: int, route: Callable[[], Any]) -> Waiter:
        if self._size >= self.max_queue:
            raise NoResourceAvailable(
                f"the pool is saturated and {self._size} calls are already waiting",
                hint="retry later, add instances, or raise max_queue",
            )
        if not self.fair:
            tenant = ""
        waiter = Waiter(
            tenant,
            (-priority, next(self._seq)),
            route,
            asyncio.get_running_loop().create_future(),
        )
        bisect.insort(self._tenants.setdefault(tenant, []), waiter)
        self._size += 1
        return waiter

    def discard(self, waiter: Waiter) -> None:
        """Remove a waiter that gave up (cancelled, timed out) or was served."""
        line = self._tenants.get(waiter.tenant)
        if line is None:
            return
        for k, w in enumerate(line):
            if w is waiter:
                del line[k]
                self._size -= 1
                if not line:
                    del self._tenants[waiter.tenant]
                return

    def dispatch(self, has_room: Callable[[], bool] | None = None) -> None:
        """Serve every waiter that can be served now, in fair order; fail those that never
        can be. ``has_room()`` false stops early (nothing free for anyone: a waiter can only
        keep waiting, unless it must fail, which a full pass without ``has_room`` finds).

        Routing a waiter can change the pool (a breaker's clock turns it half-open, which
        asks for a dispatch): a dispatch asked for during one runs after it, not inside it.
        """
        if self._dispatching:
            self._again = self._again or has_room is None or "room"
            return
        self._dispatching = True
        try:
            while True:
                self._again = False
                self._serve(has_room)
                if not self._again or not self._size:
                    return
                has_room = None if self._again is True else has_room
        finally:
            self._dispatching = False

    def _serve(self, has_room: Callable[[], bool] | None) -> None:
        served = True
        while served and self._size:
            served = False
            for tenant in list(self._tenants):
                line = self._tenants.get(tenant)
                k = 0
                while line and k < len(line):
                    if has_room is not None and not has_room():
                        return
                    waiter = line[k]
                    outcome = waiter.route() if not waiter.future.done() else None
                    if outcome is None and not waiter.future.done():
                        k += 1
                        continue
                    self.discard(waiter)
                    if waiter.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        waiter.future.set_exception(outcome)
                        continue
                    waiter.future.set_result(outcome)
                    served = True
                    if tenant in self._tenants:  # rotate: to the back of the round
                        self._tenants.move_to_end(tenant)
                    break

    def fail_all(self, error: BaseException) -> None:
        for line in self._tenants.values():
            for waiter in line:
                if not waiter.future.done():
                    waiter.future.set_exception(error)
        self._tenants.clear()
        self._size = 0
