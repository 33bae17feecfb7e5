"""Active health: turn a stream of check results into an instance status, and let a health
check stand in for a half-open breaker's trial call."""

from __future__ import annotations

from .breaker import CircuitBreaker, CircuitState
from .instance import ResourceStatus

__all__ = ["HealthTracker", "health_trial", "is_refusal"]

_FIXED = (ResourceStatus.DRAINING, ResourceStatus.STOPPED)
_SERVING = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)


def is_refusal(exc: BaseException) -> bool:
    """Is a ConnectionRefusedError behind ``exc`` (HTTP clients wrap it)? Nothing listens
    there: the instance is down now, as when a call is refused."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ConnectionRefusedError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def health_trial(breaker: CircuitBreaker | None, ok: bool, status: ResourceStatus) -> None:
    """Active recovery: a HALF_OPEN breaker takes a health check as its trial call, so a
    recovered instance closes on its own instead of waiting for user traffic to reach it,
    and a still-broken one re-opens with a longer timeout.

    The trial goes through the breaker's own ``admit``/``record_*`` protocol, so its
    guarantees hold: an OPEN breaker keeps its timeout (checks passing meanwhile do not
    shorten it), and a check never takes a trial slot a call already holds. A check that
    passes while the instance is not yet healthy again (``healthy_threshold``) gives no
    verdict."""
    if breaker is None or breaker.state is not CircuitState.HALF_OPEN:
        return
    if breaker.admit() != "trial":
        return  # every trial slot is held by a call: its outcome decides
    if ok and status in _SERVING:
        breaker.record_success(trial=True)
    elif ok:
        breaker.record_neutral(trial=True)
    else:
        breaker.record_failure(trial=True)


class HealthTracker:
    """Consecutive-result hysteresis, so one lost probe does not eject an instance and one
    lucky probe does not bring back a broken one.

    - ``unhealthy_threshold`` failures in a row → UNHEALTHY (a never-seen-healthy instance
      goes UNHEALTHY on its first failure);
    - from UNHEALTHY, ``healthy_threshold`` successes in a row → HEALTHY;
    - otherwise DEGRADED while checks are slow (``degraded_latency_ms``), some checks fail, or
      recent calls mostly fail (success rate below ``degraded_success_rate``).
    """

    def __init__(
        self,
        unhealthy_threshold: int = 3,
        healthy_threshold: int = 2,
        degraded_latency_ms: float | None = None,
        degraded_success_rate: float = 0.9,
    ):
        self.unhealthy_threshold = max(1, unhealthy_threshold)
        self.healthy_threshold = max(1, healthy_threshold)
        self.degraded_latency_ms = degraded_latency_ms
        self.degraded_success_rate = degraded_success_rate
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_check_ms: float | None = None
        self.last_error: str | None = None

    def eject(self, error: str) -> None:
        """The instance failed a call in a way only a dead one does (refused the connection):
        count it as down, so it needs ``healthy_threshold`` good checks to come back."""
        self.consecutive_failures = max(self.consecutive_failures, self.unhealthy_threshold)
        self.consecutive_successes = 0
        self.last_error = error

    def observe(
        self,
        current: ResourceStatus,
        ok: bool,
        latency_ms: float | None = None,
        recent_success_rate: float | None = None,
        error: str | None = None,
        refused: bool = False,
    ) -> ResourceStatus:
        """The status after one check. ``refused``: the check's connection was refused,
        which ejects at once (see :meth:`eject`) instead of counting towards the threshold."""
        self.last_check_ms = latency_ms
        if current in _FIXED:
            return current
        if not ok and refused:
            self.eject(error or "connection refused")
            return ResourceStatus.UNHEALTHY
        if not ok:
            self.last_error = error
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            if current is ResourceStatus.STARTING:
                return ResourceStatus.UNHEALTHY
            if self.consecutive_failures >= self.unhealthy_threshold:
                return ResourceStatus.UNHEALTHY
            if current is ResourceStatus.UNHEALTHY:
                return current
            return ResourceStatus.DEGRADED
        self.consecutive_successes += 1
        self.consecutive_failures = 0
        self.last_error = None
        if (
            current is ResourceStatus.UNHEALTHY
            and self.consecutive_successes < self.healthy_threshold
        ):
            return current
        slow = (
            self.degraded_latency_ms is not None
            and latency_ms is not None
            and latency_ms > self.degraded_latency_ms
        )
        failing = (
            recent_success_rate is not None and recent_success_rate < self.degraded_success_rate
        )
        return ResourceStatus.DEGRADED if slow or failing else ResourceStatus.HEALTHY
