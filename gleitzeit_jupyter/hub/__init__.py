"""The hub: a pool of resources with health, balancing, failover, breaker and metrics.

Pure asyncio; no Jupyter imports here (usable from scripts and services).
"""

from .balancing import STRATEGIES
from .breaker import CircuitBreaker, CircuitState
from .errors import (
    ExecutionTimeout,
    HubError,
    NoResourceAvailable,
    ResourceDeclined,
    ResourceFailed,
    UserError,
)
from .events import HubEvent
from .instance import ResourceInstance, ResourceStatus
from .metrics import RELATIVE_ACCURACY, InstanceMetrics
from .provider import HubProvider

__all__ = [
    "RELATIVE_ACCURACY",
    "STRATEGIES",
    "CircuitBreaker",
    "CircuitState",
    "ExecutionTimeout",
    "HubError",
    "HubEvent",
    "HubProvider",
    "InstanceMetrics",
    "NoResourceAvailable",
    "ResourceDeclined",
    "ResourceFailed",
    "ResourceInstance",
    "ResourceStatus",
    "UserError",
]
