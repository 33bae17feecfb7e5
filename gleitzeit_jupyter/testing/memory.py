"""An in-memory resource pool for tests, examples and benchmarks of the hub itself.

Each "resource" is a small object with a configurable latency and failure mode, so every
behaviour of :class:`HubProvider` can be driven without a network or a container.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..hub import HubProvider, ResourceFailed, ResourceInstance, UserError

__all__ = ["MemoryConfig", "MemoryProvider", "MemoryResource"]


@dataclass
class MemoryConfig:
    name: str
    latency: float = 0.0  # seconds per call
    weight: float = 1.0
    capacity: int | None = None  # max_concurrency of the instance
    accepts: set[str] | None = None  # models it "has"; None: everything


@dataclass
class MemoryResource:
    """The backend itself. Tests flip ``alive``/``fail``/``healthy`` to inject faults."""

    config: MemoryConfig
    alive: bool = True
    healthy: bool = True
    fail: bool = False  # raise ResourceFailed on every call
    refuse: bool = False  # refuse every call before it starts (ResourceFailed(started=False))
    fail_every: int = 0  # raise ResourceFailed on every n-th call
    hang: bool = False  # never answer
    error: BaseException | None = None  # raise this (any exception type) on every call
    health_latency: float = 0.0  # seconds each health check takes
    health_hang: bool = False  # health checks never answer (calls still work)
    calls: int = 0
    refused: int = 0
    after_destroy: int = 0  # calls that reached it after it was destroyed (must stay 0)
    stream_calls: int = 0
    health_checks: int = 0
    active: int = 0
    max_active: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    destroyed: bool = False

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            self.refused += 1
            raise ResourceFailed(f"{self.config.name} refused the connection", started=False)
        if self.destroyed:
            self.after_destroy += 1
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if method == "bad":
                raise UserError("bad method")
            if not self.alive or self.fail:
                raise ResourceFailed(f"{self.config.name} is down")
            if self.error is not None:
                raise self.error
            if self.fail_every and self.calls % self.fail_every == 0:
                raise ResourceFailed(f"{self.config.name} flaked")
            if self.hang:
                await asyncio.Event().wait()
            until = params.get("until")  # an asyncio.Event: the call holds its slot until set
            if until is not None:
                await until.wait()
            latency = params.get("latency", self.config.latency)
            if latency:
                await asyncio.sleep(latency)
            if not self.alive or self.fail:  # killed while the call ran
                raise ResourceFailed(f"{self.config.name} died during the call")
            self.log.append(params)
            return {"echo": params.get("value"), "served_by": self.config.name}
        finally:
            self.active -= 1


class MemoryProvider(HubProvider[MemoryConfig]):
    """A HubProvider over :class:`MemoryResource` objects.

    ``configs`` are created at ``initialize()``; ``scale_template`` (if given) lets the pool
    create more on demand; ``discoverable`` is what ``discover_resources`` reports.
    """

    def __init__(
        self,
        configs: list[MemoryConfig] | None = None,
        *,
        scale_template: MemoryConfig | None = None,
        discoverable: list[MemoryConfig] | None = None,
        **options: Any,
    ):
        options.setdefault("name", "memory")
        super().__init__(resource_config_class=MemoryConfig, **options)
        self.configs = list(configs or [])
        self.scale_template = scale_template
        self.discoverable = discoverable if discoverable is not None else []
        self.resources: dict[str, MemoryResource] = {}
        self.created = 0
        self.destroyed = 0
        self.health_active = 0  # health checks running right now (across the pool)
        self.health_max_active = 0  # most health checks ever running at once
        self.create_delay = 0.0  # seconds each create_resource takes
        self.create_fails = False  # create_resource raises (a failed scale-up)
        self._ids = itertools.count(1)

    def resource_key(self, config: MemoryConfig) -> str:
        return config.name

    async def initial_resources(self) -> list[MemoryConfig]:
        return list(self.configs)

    async def discover_resources(self) -> list[MemoryConfig]:
        return list(self.discoverable)

    async def config_for_new_resource(self) -> MemoryConfig | None:
        if self.scale_template is None:
            return None
        t = self.scale_template
        return MemoryConfig(f"{t.name}-{next(self._ids)}", t.latency, t.weight, t.capacity)

    async def create_resource(self, config: MemoryConfig) -> ResourceInstance:
        await asyncio.sleep(self.create_delay)
        if self.create_fails:
            raise ResourceFailed(f"could not create {config.name}")
        resource = self.resources.get(config.name) or MemoryResource(config)
        resource.destroyed = False
        self.resources[config.name] = resource
        self.created += 1
        return ResourceInstance(
            id=config.name,
            config=config,
            endpoint=f"memory://{config.name}",
            weight=config.weight,
            max_concurrency=config.capacity,
            handle=resource,
        )

    async def destroy_resource(self, instance: ResourceInstance) -> None:
        instance.handle.destroyed = True
        self.destroyed += 1

    async def execute_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        return await instance.handle.call(method, params)

    async def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        resource: MemoryResource = instance.handle
        if resource.refuse:
            resource.refused += 1
            raise ResourceFailed(f"{resource.config.name} refused the connection", started=False)
        resource.stream_calls += 1
        n = int(params.get("chunks", 3))
        for k in range(n):
            if not resource.alive:
                raise ResourceFailed(f"{resource.config.name} died mid-stream")
            if k == params.get("fail_at"):
                resource.alive = False
                raise ResourceFailed(f"{resource.config.name} died mid-stream")
            await asyncio.sleep(params.get("latency", 0))
            chunk = {"index": k, "served_by": resource.config.name}
            if params.get("final") and k == n - 1:
                chunk["done"] = True  # the last chunk says so, as Ollama's does
            yield chunk

    async def check_resource_health(self, instance: ResourceInstance) -> bool:
        resource: MemoryResource = instance.handle
        resource.health_checks += 1
        self.health_active += 1
        self.health_max_active = max(self.health_max_active, self.health_active)
        try:
            if resource.hang or resource.health_hang:
                await asyncio.Event().wait()
            if resource.health_latency:
                await asyncio.sleep(resource.health_latency)
            return resource.alive and resource.healthy
        finally:
            self.health_active -= 1

    def instance_accepts(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        model = params.get("model")
        accepts = instance.config.accepts
        return model is None or accepts is None or model in accepts
