"""Per-instance circuit breaker.

CLOSED → OPEN after ``failure_threshold`` consecutive infrastructure failures. An OPEN breaker
admits nothing until ``recovery_timeout`` has passed; then it is HALF_OPEN and admits at most
``half_open_max`` concurrent trial calls. A trial success closes it; a trial failure re-opens
it with the timeout multiplied by ``backoff`` (capped), so a flapping instance is tried less
and less often.

Trial slots are counted exactly: :meth:`admit` says whether a call is a trial (``"trial"``)
or an ordinary call (``"call"``), the caller passes ``trial=`` back with the outcome, and only
trial outcomes free trial slots. (A call admitted while CLOSED may finish while HALF_OPEN; had
it freed a slot, more than ``half_open_max`` trials could run at once.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        recovery_timeout: float = 10.0,
        half_open_max: int = 1,
        backoff: float = 2.0,
        max_recovery_timeout: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitState, CircuitState], None] | None = None,
    ):
        if failure_threshold < 1 or half_open_max < 1 or recovery_timeout < 0:
            raise ValueError("failure_threshold and half_open_max must be >= 1, timeout >= 0")
        self.failure_threshold = failure_threshold
        self.base_recovery_timeout = recovery_timeout
        self.half_open_max = half_open_max
        self.backoff = backoff
        self.max_recovery_timeout = max(max_recovery_timeout, recovery_timeout)
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self.consecutive_failures = 0
        self.recovery_timeout = recovery_timeout
        self.opened_at: float | None = None
        self.trials = 0  # trial calls admitted and not yet finished (of any episode)
        self.times_opened = 0

    # state ------------------------------------------------------------------------------
    @property
    def state(self) -> CircuitState:
        """Current state; an OPEN breaker whose timeout has passed reads as HALF_OPEN."""
        if (
            self._state is CircuitState.OPEN
            and self.opened_at is not None
            and self._clock() - self.opened_at >= self.recovery_timeout
        ):
            self._set(CircuitState.HALF_OPEN)
        return self._state

    @property
    def recorded_state(self) -> CircuitState:
        """The state as last set: unlike :attr:`state`, an OPEN breaker past its timeout is
        not moved to HALF_OPEN (reading this never notifies ``on_change``)."""
        return self._state

    def _set(self, new: CircuitState) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        if self._on_change is not None:
            self._on_change(old, new)

    def can_admit(self) -> bool:
        """Would a call be admitted now (without reserving a trial slot)?"""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN:
            return self.trials < self.half_open_max
        return False

    def retry_in(self) -> float:
        """Seconds until an OPEN breaker admits its next trial (0 when it admits now)."""
        if self.state is not CircuitState.OPEN or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.recovery_timeout - self._clock())

    def admit(self) -> str | None:
        """Reserve admission for one call: ``"call"`` (closed), ``"trial"`` (a half-open trial)
        or None (rejected). Every admitted call must end in exactly one of
        :meth:`record_success`, :meth:`record_failure` or :meth:`record_neutral`, with
        ``trial=True`` when it was admitted as a trial."""
        state = self.state
        if state is CircuitState.CLOSED:
            return "call"
        if state is CircuitState.HALF_OPEN and self.trials < self.half_open_max:
            self.trials += 1
            return "trial"
        return None

    def _end_trial(self, trial: bool) -> None:
        if trial:
            self.trials = max(0, self.trials - 1)

    # outcomes ---------------------------------------------------------------------------
    def record_success(self, trial: bool = False) -> None:
        self.consecutive_failures = 0
        self._end_trial(trial)
        if self._state is not CircuitState.CLOSED:
            # a trial succeeded (or a call admitted while CLOSED finished after a trial
            # re-opened and closed it again: the instance works either way)
            self.recovery_timeout = self.base_recovery_timeout
            self.opened_at = None
            self._set(CircuitState.CLOSED)

    def record_failure(self, trial: bool = False) -> None:
        self.consecutive_failures += 1
        self._end_trial(trial)
        if self._state is CircuitState.HALF_OPEN:
            self.recovery_timeout = min(
                self.recovery_timeout * self.backoff, self.max_recovery_timeout
            )
            self._open()
        elif (
            self._state is CircuitState.CLOSED
            and self.consecutive_failures >= self.failure_threshold
        ):
            self._open()

    def record_neutral(self, trial: bool = False) -> None:
        """The call ended without telling anything about the instance (a user error, a
        cancellation): release its trial slot, change nothing else."""
        self._end_trial(trial)

    def _open(self) -> None:
        self.opened_at = self._clock()
        self.times_opened += 1
        self._set(CircuitState.OPEN)

    def reset(self) -> None:
        """Force CLOSED (an operator's "reset breaker")."""
        self.consecutive_failures = 0
        self.opened_at = None
        self.recovery_timeout = self.base_recovery_timeout
        self._set(CircuitState.CLOSED)

    def trip(self) -> None:
        """Force OPEN now, e.g. when the instance is known dead."""
        if self._state is not CircuitState.OPEN:
            self._open()
