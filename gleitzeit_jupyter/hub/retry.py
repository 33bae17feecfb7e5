"""Retry budget: retries as a bounded share of recent traffic (Finagle's RetryBudget).

Every call deposits; every retry of a call that may have reached an instance withdraws. A
retry is allowed while

    withdrawals(last ttl s) < ratio * deposits(last ttl s) + min_per_s * ttl

so a dead pool gets about ``ratio`` extra load rather than ``retries + 1`` times the load,
while a burst of failures on one dead member of a healthy pool is paid for by the traffic the
pool carried just before (and by the reserve, for pools too quiet to have earned any).
Deposits expire after ``ttl`` seconds, so a budget spent during an outage refills as soon as
traffic flows, and a long quiet spell cannot hoard an unbounded balance.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RetryBudget"]


class RetryBudget:
    def __init__(
        self,
        ratio: float = 0.2,
        min_per_s: float = 10.0,
        ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ratio < 0 or min_per_s < 0 or ttl <= 0:
            raise ValueError("need ratio >= 0, min_per_s >= 0 and ttl > 0")
        self.ratio = ratio
        self.reserve = min_per_s * ttl
        self._clock = clock
        # one slot per second of the window
        self._slots = max(1, round(ttl))
        self._width = ttl / self._slots
        self._deposits = [0] * self._slots
        self._withdrawals = [0] * self._slots
        self._at = int(clock() / self._width)  # index of the current slot, unwrapped
        self._cur = self._at % self._slots
        self._next = (self._at + 1) * self._width  # when the current slot ends
        self._dep_total = 0
        self._wd_total = 0

    def _advance(self) -> None:
        """Expire the slots that ended since the last touch (called only when one did)."""
        now = int(self._clock() / self._width)
        for k in range(self._at + 1, min(now, self._at + self._slots) + 1):
            s = k % self._slots
            self._dep_total -= self._deposits[s]
            self._wd_total -= self._withdrawals[s]
            self._deposits[s] = self._withdrawals[s] = 0
        self._at = now
        self._cur = now % self._slots
        self._next = (now + 1) * self._width

    def deposit(self) -> None:
        """One call was made (on every call's path: one clock read, two additions)."""
        if self._clock() >= self._next:
            self._advance()
        self._deposits[self._cur] += 1
        self._dep_total += 1

    @property
    def balance(self) -> float:
        """Retries allowed now."""
        if self._clock() >= self._next:
            self._advance()
        return self.ratio * self._dep_total + self.reserve - self._wd_total

    def try_withdraw(self) -> bool:
        """Spend one retry if the budget allows it."""
        if self.balance < 1.0:
            return False
        self._withdrawals[self._cur] += 1
        self._wd_total += 1
        return True
