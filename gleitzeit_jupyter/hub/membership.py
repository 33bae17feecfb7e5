"""Membership of a pool: who is in it, how they join and leave, and how healthy they are.

:class:`Membership` is composed into :class:`HubProvider` and sees the provider only through
the :class:`Host` interface. It owns the instance registry and everything that changes it:
explicit adds and removals, on-demand scale-up, discovery, idle reaping and health checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .breaker import CircuitBreaker, CircuitState
from .calls import as_failure
from .errors import HubError, NoResourceAvailable, ResourceFailed, UserError
from .events import EventBus, HubEvent
from .health import HealthTracker, health_trial, is_refusal
from .instance import ResourceInstance, ResourceStatus
from .lifecycle import Lifecycle
from .metrics import InstanceMetrics
from .policy import BreakerPolicy, HealthPolicy, PoolPolicy

__all__ = ["Host", "Membership"]

log = logging.getLogger(__name__)

_GONE = (ResourceStatus.DRAINING, ResourceStatus.STOPPED)


class Host(Protocol):
    """What membership needs from the provider it keeps the members of."""

    name: str
    lifecycle: Lifecycle
    clock: Callable[[], float]
    pool_policy: PoolPolicy
    health_policy: HealthPolicy
    breaker_policy: BreakerPolicy

    # the provider's hooks
    async def create_resource(self, config: Any) -> ResourceInstance: ...
    async def destroy_resource(self, instance: ResourceInstance) -> None: ...
    async def check_resource_health(self, instance: ResourceInstance) -> bool: ...
    async def discover_resources(self) -> list[Any]: ...
    async def config_for_new_resource(self) -> Any | None: ...
    def resource_key(self, config: Any) -> str: ...


class Membership:
    """The instances of one pool. ``pump`` is called whenever a change may let queued calls
    be served (or show that they never can be)."""

    def __init__(self, host: Host, *, events: EventBus, pump: Callable[[], None]):
        self._host = host
        self._events = events
        self._pump = pump
        self.instances: dict[str, ResourceInstance] = {}
        self.health: dict[str, HealthTracker] = {}
        self._keys: dict[str, str] = {}  # instance id -> resource_key (for discovery diffing)
        self._scale_lock = asyncio.Lock()
        # Keys being created, so two concurrent adds of one config (add_resource racing
        # discovery) do not both create it.
        self._adding: set[str] = set()
        self.creating = 0  # resources being created on demand (counted against the maximum)
        #: set when an instance's last call ended (shutdown and removal wait for it)
        self.drained = asyncio.Event()

    def get(self, instance_id: str) -> ResourceInstance:
        try:
            return self.instances[instance_id]
        except KeyError:
            known = ", ".join(self.instances) or "none"
            raise UserError(
                f"no instance {instance_id!r} in the {self._host.name} pool", hint=f"known: {known}"
            ) from None

    def set_status(self, instance: ResourceInstance, status: ResourceStatus) -> None:
        old = instance.status
        if old is status:
            return
        instance.status = status
        self._events.emit(HubEvent("status", self._host.name, instance.id, old, status))
        self._pump()

    def eject(self, instance: ResourceInstance, error: ResourceFailed) -> None:
        """Passive health: the instance refused a call outright, so it is down now, not
        after ``unhealthy_threshold`` health intervals."""
        tracker = self.health.get(instance.id)
        if tracker is None or instance.status in _GONE:
            return
        tracker.eject(str(error))
        self.set_status(instance, ResourceStatus.UNHEALTHY)

    # ---- joining and leaving ----------------------------------------------------------
    async def remove(self, instance_id: str, drain_timeout: float) -> None:
        instance = self.get(instance_id)
        self.set_status(instance, ResourceStatus.DRAINING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while instance.in_flight > 0 and loop.time() < deadline:
            self.drained.clear()
            try:
                await asyncio.wait_for(self.drained.wait(), deadline - loop.time())
            except TimeoutError:
                break
        await self.destroy(instance)

    async def add(
        self, config: Any, origin: str, *, check: bool, raise_errors: bool = False
    ) -> ResourceInstance | None:
        key = self._host.resource_key(config)
        if key in self._keys.values() or key in self._adding:
            if raise_errors:
                raise UserError(f"{key} is already in the {self._host.name} pool")
            return None
        self._adding.add(key)
        try:
            return await self._create(config, origin, key, check, raise_errors)
        finally:
            self._adding.discard(key)

    async def _create(
        self, config: Any, origin: str, key: str, check: bool, raise_errors: bool
    ) -> ResourceInstance | None:
        host = self._host
        generation = host.lifecycle.generation
        if not host.lifecycle.current(generation):
            raise NoResourceAvailable(f"the {host.name} provider is not running")
        try:
            instance = await host.create_resource(config)
        except Exception as exc:
            if not raise_errors:
                log.warning("%s: could not create %s: %s", host.name, key, exc)
                return None
            if isinstance(exc, HubError):
                raise
            raise as_failure(exc, ResourceInstance(id=key, config=config)) from exc
        if not host.lifecycle.current(generation):
            # the pool stopped (or stopped and restarted) while this was being created
            await self._discard(instance)
            raise NoResourceAvailable(f"the {host.name} provider was shut down")
        if instance.id in self.instances:
            await self._discard(instance)
            raise UserError(f"instance id {instance.id!r} is already in the {host.name} pool")
        self._register(instance, origin, key)
        if check:
            await self.check_one(instance)
        else:
            self.set_status(instance, ResourceStatus.HEALTHY)
        return instance

    async def _discard(self, instance: ResourceInstance) -> None:
        """Destroy a resource that never joined the pool."""
        instance.status = ResourceStatus.STOPPED
        try:
            await self._host.destroy_resource(instance)
        except Exception as exc:
            log.warning("%s: destroying %s failed: %s", self._host.name, instance.id, exc)

    def _register(self, instance: ResourceInstance, origin: str, key: str) -> None:
        host = self._host
        instance.origin = origin
        instance.status = ResourceStatus.STARTING
        instance.metrics = InstanceMetrics(window=host.pool_policy.metrics_window)

        def on_breaker(old: CircuitState, new: CircuitState, ident: str = instance.id) -> None:
            self._events.emit(HubEvent("breaker", host.name, ident, old, new))
            self._pump()  # waiters may be servable now, or never (every breaker open)

        b = host.breaker_policy
        instance.breaker = CircuitBreaker(
            b.breaker_failure_threshold,
            b.breaker_recovery_timeout,
            b.breaker_half_open_max,
            clock=host.clock,
            on_change=on_breaker,
        )
        self.instances[instance.id] = instance
        self._keys[instance.id] = key
        h = host.health_policy
        self.health[instance.id] = HealthTracker(
            h.unhealthy_threshold, h.healthy_threshold, h.degraded_latency_ms
        )
        self._events.emit(HubEvent("membership", host.name, instance.id, None, "added"))

    async def destroy(self, instance: ResourceInstance) -> None:
        if self.instances.pop(instance.id, None) is None:
            return
        self._keys.pop(instance.id, None)
        self.health.pop(instance.id, None)
        self.set_status(instance, ResourceStatus.STOPPED)
        try:
            await self._host.destroy_resource(instance)
        except Exception as exc:
            log.warning("%s: destroying %s failed: %s", self._host.name, instance.id, exc)
        self._events.emit(HubEvent("membership", self._host.name, instance.id, "added", "removed"))
        self._pump()  # waiters that can no longer be served must learn it

    # ---- scaling ----------------------------------------------------------------------
    async def scale_up(self) -> ResourceInstance | None:
        """Create one resource on demand; None when at the maximum or the provider can't."""
        async with self._scale_lock:
            if len(self.instances) + self.creating >= self._host.pool_policy.max_instances:
                return None
            config = await self._host.config_for_new_resource()
            if config is None:
                return None
            self.creating += 1
        try:
            return await self.add(config, "scaled", check=False, raise_errors=True)
        finally:
            self.creating -= 1
            self._pump()  # waiters held back while we created must learn the outcome

    async def reap_idle(self) -> None:
        pool = self._host.pool_policy
        now = time.monotonic()
        for inst in list(self.instances.values()):
            if len(self.instances) <= pool.min_instances:
                return
            if (
                inst.origin == "scaled"
                and inst.in_flight == 0
                and now - inst.last_used >= pool.idle_timeout
            ):
                await self.destroy(inst)

    # ---- discovery --------------------------------------------------------------------
    async def discover(self) -> list[Any] | None:
        """What discovery finds now; None when discovery itself failed."""
        try:
            return list(await self._host.discover_resources())
        except Exception as exc:
            log.warning("%s: discovery failed: %s", self._host.name, exc)
            return None

    async def discover_now(self, remove: Callable[[str], Any]) -> None:
        """One discovery pass: add new resources, retire (with ``remove``) discovered ones
        that vanished."""
        configs = await self.discover()
        if configs is None:
            # A failed discovery is not "nothing found": it must not retire anything.
            return
        found = {self._host.resource_key(c): c for c in configs}
        known = set(self._keys.values())
        await asyncio.gather(
            *(self.add(c, "discovered", check=True) for k, c in found.items() if k not in known)
        )
        for inst in list(self.instances.values()):
            if inst.origin == "discovered" and self._keys.get(inst.id) not in found:
                await remove(inst.id)

    # ---- health checks ----------------------------------------------------------------
    async def check_one(self, instance: ResourceInstance) -> None:
        h = self._host.health_policy
        started = time.perf_counter()
        error = None
        refused = False
        try:
            ok = bool(
                await asyncio.wait_for(
                    self._host.check_resource_health(instance), h.health_check_timeout
                )
            )
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            ok, error = False, f"no answer within {h.health_check_timeout:g} s"
        except Exception as exc:
            ok, error, refused = False, str(exc) or type(exc).__name__, is_refusal(exc)
        if not ok and error is None:
            error = "health check failed"
        latency_ms = (time.perf_counter() - started) * 1000.0
        tracker = self.health.get(instance.id)
        if tracker is None or instance.id not in self.instances:
            return  # removed while we checked
        span = max(30.0, 2 * h.health_check_interval)
        rate = instance.metrics.recent_success_rate(span) if instance.metrics else None
        status = tracker.observe(instance.status, ok, latency_ms, rate, error, refused=refused)
        self.set_status(instance, status)
        if status not in _GONE:
            health_trial(instance.breaker, ok, status)

    async def check_all(self) -> None:
        instances = [i for i in self.instances.values() if i.status not in _GONE]
        await asyncio.gather(*(self.check_one(i) for i in instances))

    def health_error(self, instance_id: str) -> str | None:
        tracker = self.health.get(instance_id)
        return tracker.last_error if tracker is not None else None
