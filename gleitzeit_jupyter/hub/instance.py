"""One pooled backend (an Ollama server, a sandbox container) and its status enum.

``CircuitState`` lives in ``breaker.py``; it is re-exported here for older imports.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .breaker import CircuitState

if TYPE_CHECKING:
    from .breaker import CircuitBreaker
    from .metrics import InstanceMetrics

__all__ = ["CircuitState", "ConfigT", "ResourceInstance", "ResourceStatus"]

ConfigT = TypeVar("ConfigT")


class ResourceStatus(str, Enum):
    STARTING = "starting"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(eq=False)
class ResourceInstance(Generic[ConfigT]):
    """A backend in the pool.

    A provider's ``create_resource`` builds it with ``id``, ``config`` and ``endpoint`` and may
    put its own client object in ``handle``; the hub owns every other field.
    """

    id: str
    config: ConfigT
    endpoint: str = ""
    tags: set[str] = field(default_factory=set)
    metadata: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    #: Calls this instance takes at once; more wait in the hub's queue. ``None``: unbounded.
    max_concurrency: int | None = None
    #: Provider-private client object (httpx client, docker container, ...).
    handle: Any = None

    # --- owned by the hub -------------------------------------------------------------
    status: ResourceStatus = ResourceStatus.STARTING
    in_flight: int = 0
    enabled: bool = True
    #: "explicit" (initial / add_resource), "discovered" or "scaled" (created on demand).
    origin: str = "explicit"
    created_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    breaker: CircuitBreaker | None = field(default=None, repr=False)
    metrics: InstanceMetrics | None = field(default=None, repr=False)

    @property
    def breaker_state(self) -> CircuitState:
        return self.breaker.state if self.breaker is not None else CircuitState.CLOSED

    @property
    def has_capacity(self) -> bool:
        return self.max_concurrency is None or self.in_flight < self.max_concurrency

    def __repr__(self) -> str:
        return (
            f"<ResourceInstance {self.id} {self.endpoint} {self.status.value}"
            f" breaker={self.breaker_state.value} in_flight={self.in_flight}>"
        )
