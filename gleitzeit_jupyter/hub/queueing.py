"""Waiting room for calls when the pool is saturated: fair across tenants, by priority within.

Tenants are served round-robin, so a tenant with a thousand queued calls cannot starve a
tenant with one. Within a tenant, higher ``priority`` goes first, then arrival order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict

from .errors import NoResourceAvailable

__all__ = ["FairQueue", "RetryBudget"]


class _Waiter:
    __slots__ = ("future", "priority", "tenant")

    def __init__(self, tenant: str, priority: int, future: asyncio.Future):
        self.tenant = tenant
        self.priority = priority
        self.future = future


class FairQueue:
    def __init__(self, max_queue: int = 1000, fair: bool = True):
        self.max_queue = max_queue
        self.fair = fair  # without sharing every call is one tenant: plain priority FIFO
        self._tenants: OrderedDict[str, list[tuple[int, int, _Waiter]]] = OrderedDict()
        self._seq = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @property
    def tenants(self) -> int:
        return len(self._tenants)

    def push(self, tenant: str, priority: int, *, front: bool = False) -> asyncio.Future:
        if self._size >= self.max_queue:
            raise NoResourceAvailable(
                f"the pool is saturated and {self._size} calls are already waiting",
                hint="retry later, add instances, or raise max_queue",
            )
        if not self.fair:
            tenant = ""
        future = asyncio.get_running_loop().create_future()
        seq = -next(self._seq) if front else next(self._seq)
        heap = self._tenants.setdefault(tenant, [])
        heapq.heappush(heap, (-priority, seq, _Waiter(tenant, priority, future)))
        self._size += 1
        return future

    def wake_next(self, hops: int = 0, skip: asyncio.Future | None = None) -> bool:
        """Resolve the next waiter in fair order with ``hops``; False when nobody waits.

        ``skip`` is a waiter passing its wake-up on: its tenant is passed over this time.
        """
        for tenant in list(self._tenants):
            heap = self._tenants[tenant]
            if skip is not None and heap[0][2].future is skip:
                continue
            _, _, waiter = heapq.heappop(heap)
            self._size -= 1
            # rotate: this tenant goes to the back of the round
            del self._tenants[tenant]
            if heap:
                self._tenants[tenant] = heap
            if not waiter.future.done():
                waiter.future.set_result(hops)
                return True
        return False

    def discard(self, future: asyncio.Future) -> None:
        """Remove a waiter that gave up (cancelled, timed out)."""
        for tenant, heap in list(self._tenants.items()):
            for k, item in enumerate(heap):
                if item[2].future is future:
                    heap.pop(k)
                    heapq.heapify(heap)
                    self._size -= 1
                    if not heap:
                        del self._tenants[tenant]
                    return

    def fail_all(self, error: BaseException) -> None:
        for heap in self._tenants.values():
            for _, _, waiter in heap:
                if not waiter.future.done():
                    waiter.future.set_exception(error)
        self._tenants.clear()
        self._size = 0


class RetryBudget:
    """Retries allowed as a fraction of recent traffic (a token bucket).

    Each first attempt deposits ``ratio`` tokens, each retry withdraws one; the bucket holds at
    most ``cap``. When every instance is failing, retries stop at about ``ratio`` of the load
    instead of multiplying it by ``retries + 1``.
    """

    def __init__(self, ratio: float = 0.2, initial: float = 10.0, cap: float = 100.0):
        self.ratio = ratio
        self.cap = cap
        self.tokens = min(initial, cap)

    def deposit(self) -> None:
        self.tokens = min(self.cap, self.tokens + self.ratio)

    def try_withdraw(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
