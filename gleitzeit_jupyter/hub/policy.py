"""The knobs of a pool, grouped by concern: membership, health, breaker, retries and deadlines.

``HubProvider(pool=PoolPolicy(...), retry=RetryPolicy(...))`` and the flat keywords
(``HubProvider(max_instances=..., retries=...)``) are the same thing: every flat keyword names
one field of one policy (:data:`FLAT`), and the provider reads and writes the field through an
attribute of that name.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from .errors import UserError

__all__ = [
    "FLAT",
    "BreakerPolicy",
    "Flat",
    "HealthPolicy",
    "PoolPolicy",
    "RetryPolicy",
    "build",
    "checked",
]


@dataclass
class PoolPolicy:
    """Who is in the pool and how many calls wait for it."""

    max_instances: int = 10
    min_instances: int = 0
    idle_timeout: float = 300.0  # seconds an idle scaled-up instance lives
    enable_auto_discovery: bool = False
    discovery_interval: float = 30.0
    enable_sharing: bool = False  # fair queuing across tenants
    max_queue: int = 1000
    shutdown_grace: float = 5.0  # seconds shutdown() lets running calls finish
    metrics_window: float = 300.0


@dataclass
class HealthPolicy:
    """Active health checks and their hysteresis."""

    health_check_interval: float = 5.0
    health_check_timeout: float = 2.0
    unhealthy_threshold: int = 3
    healthy_threshold: int = 2
    degraded_latency_ms: float | None = None


@dataclass
class BreakerPolicy:
    """Per-instance circuit breaker."""

    breaker_failure_threshold: int = 5
    breaker_recovery_timeout: float = 10.0
    breaker_half_open_max: int = 1


@dataclass
class RetryPolicy:
    """Retries of calls that may have reached an instance, and the deadline of one call.

    The budget follows Finagle's RetryBudget: retries within any ``retry_budget_ttl`` seconds
    may reach ``retry_budget_ratio`` of the calls made in them, plus a reserve of
    ``min_retries_per_s`` a second for quiet pools. Calls that provably never reached an
    instance are requeued outside the budget.
    """

    retries: int = 2
    retry_budget_ratio: float = 0.2
    min_retries_per_s: float = 10.0
    retry_budget_ttl: float = 10.0
    call_timeout: float | None = None  # one deadline: queue wait + every attempt + stream
    first_token_timeout: float | None = None  # a stream's first chunk, per attempt


_POLICIES: dict[str, type] = {
    "pool": PoolPolicy,
    "health": HealthPolicy,
    "breaker": BreakerPolicy,
    "retry": RetryPolicy,
}

#: flat keyword -> the policy (by its keyword) holding it
FLAT: dict[str, str] = {
    f.name: key for key, cls in _POLICIES.items() for f in dataclasses.fields(cls)
}


# What each field accepts: (kind, lowest value, whether the lowest value itself is allowed).
# kind: "int", "float", "float?" (None allowed: no limit) or "bool". A bad value is refused
# where it is given, not when the pool first uses it (a breaker built at the first add, a
# deadline computed at the first call).
_RULES: dict[str, tuple[str, float, bool]] = {
    "max_instances": ("int", 1, True),
    "min_instances": ("int", 0, True),
    "idle_timeout": ("float", 0, True),
    "enable_auto_discovery": ("bool", 0, True),
    "discovery_interval": ("float", 0, False),
    "enable_sharing": ("bool", 0, True),
    "max_queue": ("int", 0, True),
    "shutdown_grace": ("float", 0, True),
    "metrics_window": ("float", 0, False),
    "health_check_interval": ("float", 0, False),
    "health_check_timeout": ("float", 0, False),
    "unhealthy_threshold": ("int", 1, True),
    "healthy_threshold": ("int", 1, True),
    "degraded_latency_ms": ("float?", 0, False),
    "breaker_failure_threshold": ("int", 1, True),
    "breaker_recovery_timeout": ("float", 0, True),
    "breaker_half_open_max": ("int", 1, True),
    "retries": ("int", 0, True),
    "retry_budget_ratio": ("float", 0, True),
    "min_retries_per_s": ("float", 0, True),
    "retry_budget_ttl": ("float", 0, False),
    "call_timeout": ("float?", 0, False),
    "first_token_timeout": ("float?", 0, False),
}


def checked(name: str, value: Any, label: str | None = None) -> Any:
    """``value`` as option ``name`` holds it (numpy numbers become Python ones); a UserError
    naming the option (or ``label``, the argument it came as) when it is of the wrong type
    or out of range."""
    kind, low, inclusive = _RULES[name]
    name = label or name
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise UserError(f"{name} must be True or False, not {value!r}")
    if value is None and kind == "float?":
        return None
    given = value
    bound = f">= {low:g}" if inclusive else f"> {low:g}"
    if kind == "float?":
        bound += " or None"
    if kind == "int":
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        what = "an integer"
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = ok and not math.isnan(value)
        what = "a number"
    if ok:
        value = int(value) if kind == "int" else float(value)
        if value > low or (inclusive and value == low):
            return value
    raise UserError(f"{name} must be {what} {bound}, not {given!r}")


def build(given: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """The four policies from policy objects (``given``, by keyword; None: defaults) and flat
    keywords, which override the objects' fields."""
    unknown = sorted(set(flat) - set(FLAT))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, cls in _POLICIES.items():
        policy = given.get(key)
        if policy is not None and not isinstance(policy, cls):
            raise UserError(f"{key}= takes a {cls.__name__}, not {type(policy).__name__}")
        mine = {k: v for k, v in flat.items() if FLAT[k] == key}
        policy = cls() if policy is None else dataclasses.replace(policy)
        for k, v in mine.items():
            setattr(policy, k, v)
        for f in dataclasses.fields(policy):
            setattr(policy, f.name, checked(f.name, getattr(policy, f.name)))
        out[key] = policy
    pool = out["pool"]
    if pool.min_instances > pool.max_instances:
        raise UserError(
            f"min_instances ({pool.min_instances}) must not exceed"
            f" max_instances ({pool.max_instances})"
        )
    return out


class Flat:
    """A flat keyword of the constructor as an attribute of the provider: reads and writes
    the field of its policy (the provider's ``<policy>_policy`` attribute)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.policy = f"{FLAT[name]}_policy"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.policy), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.policy), self.name, checked(self.name, value))
