"""The hooks a provider fills in: how to create, destroy, call and check one resource, and
how to route among them. The defaults here are what HubProvider does when one is not given.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic

from .errors import HubError, UserError
from .instance import ConfigT, ResourceInstance

__all__ = ["ResourceHooks", "default_hook", "is_default_hook"]


def default_hook(fn):
    """Mark a base-class hook, so the call path can skip work a subclass did not ask for."""
    fn._hub_default = True
    return fn


def is_default_hook(fn) -> bool:
    return getattr(fn, "_hub_default", False)


class ResourceHooks(Generic[ConfigT]):
    """The hook contract of :class:`~gleitzeit_jupyter.hub.provider.HubProvider` (see
    ``docs/architecture.md``): the first four are required, the rest have defaults."""

    async def create_resource(self, config: ConfigT) -> ResourceInstance:
        raise NotImplementedError

    async def destroy_resource(self, instance: ResourceInstance) -> None:
        raise NotImplementedError

    async def execute_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def check_resource_health(self, instance: ResourceInstance) -> bool:
        raise NotImplementedError

    async def discover_resources(self) -> list[ConfigT]:
        return []

    async def initial_resources(self) -> list[ConfigT]:
        return []

    async def config_for_new_resource(self) -> ConfigT | None:
        return None

    def resource_key(self, config: ConfigT) -> str:
        return str(config)

    @default_hook
    def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        raise UserError(f"{type(self).__name__} does not stream {method!r}")

    def instance_accepts(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        return True

    @default_hook
    def instance_preference(self, instance: ResourceInstance, method: str, params: dict) -> int:
        return 0

    def instance_cost(self, instance: ResourceInstance, method: str, params: dict) -> float:
        """Expected seconds until the call would finish on ``instance`` (the ``fleet``
        strategy sends it where this is least). Default: its calls in flight."""
        return float(instance.in_flight)

    def instance_extras(self, instance: ResourceInstance) -> dict[str, Any]:
        return {}

    def pool_extras(self, instances: list[ResourceInstance]) -> dict[str, Any]:
        """The ``instance_extras`` columns for the whole pool (the ``ALL`` row, totals)."""
        return {}

    def no_instance_error(
        self, method: str, params: dict, instances: list[ResourceInstance]
    ) -> HubError | None:
        return None

    def validate(self, method: str, params: dict[str, Any]) -> None:
        return None
