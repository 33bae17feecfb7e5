"""HubProvider: one class with pooling, health, balancing, failover, breaker and metrics.

A subclass fills in how to create, destroy, call and check one resource; everything about
running a pool of them lives here. All methods run on one asyncio loop; nothing blocks it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from . import policy as _policy
from . import snapshot
from .balancing import Balancer
from .calls import CallPath
from .errors import NoResourceAvailable, ResourceFailed, UserError
from .events import EventBus, HubEvent
from .hooks import ResourceHooks
from .instance import ConfigT, ResourceInstance, ResourceStatus
from .lifecycle import Lifecycle, PoolState
from .membership import Membership
from .policy import BreakerPolicy, Flat, HealthPolicy, PoolPolicy, RetryPolicy

__all__ = ["HubProvider"]

log = logging.getLogger(__name__)

_TICK = 1.0  # seconds between maintenance passes (idle reaping, coalesced metrics events)


class HubProvider(ResourceHooks[ConfigT]):
    """Base class of every provider. See ``docs/architecture.md`` for the hook contract.

    Options come as four policy objects (``pool=PoolPolicy(...)``, ``health=``, ``breaker=``,
    ``retry=``) or as flat keywords naming their fields (``max_instances=``, ``retries=``,
    ...), which override the objects' values. Each flat name is also an attribute.
    """

    #: Whether a call that failed after it may have reached the resource may be run again on
    #: another instance. False for providers whose calls are not idempotent (the sandbox:
    #: code that may have run is never run twice); failures raised with ``started=False``
    #: are requeued either way.
    retry_started_calls: bool = True

    #: The clock of breakers and the retry budget (a simulation swaps in its virtual one).
    clock: Callable[[], float] = staticmethod(time.monotonic)

    max_instances = Flat()
    min_instances = Flat()
    idle_timeout = Flat()
    enable_auto_discovery = Flat()
    discovery_interval = Flat()
    enable_sharing = Flat()
    max_queue = Flat()
    shutdown_grace = Flat()
    metrics_window = Flat()
    health_check_interval = Flat()
    health_check_timeout = Flat()
    unhealthy_threshold = Flat()
    healthy_threshold = Flat()
    degraded_latency_ms = Flat()
    breaker_failure_threshold = Flat()
    breaker_recovery_timeout = Flat()
    breaker_half_open_max = Flat()
    retries = Flat()
    retry_budget_ratio = Flat()
    min_retries_per_s = Flat()
    retry_budget_ttl = Flat()
    call_timeout = Flat()
    first_token_timeout = Flat()

    def __init__(
        self,
        *,
        resource_config_class: type | None = None,
        name: str | None = None,
        strategy: str = "least_loaded",
        pool: PoolPolicy | None = None,
        health: HealthPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        retry: RetryPolicy | None = None,
        **options: Any,
    ):
        policies = _policy.build(
            {"pool": pool, "health": health, "breaker": breaker, "retry": retry}, options
        )
        self.pool_policy: PoolPolicy = policies["pool"]
        self.health_policy: HealthPolicy = policies["health"]
        self.breaker_policy: BreakerPolicy = policies["breaker"]
        self.retry_policy: RetryPolicy = policies["retry"]
        self.resource_config_class = resource_config_class
        self.name = name or type(self).__name__.removesuffix("Provider").lower() or "hub"
        self.strategy = Balancer.check(strategy)

        self._events = EventBus()
        self.lifecycle = Lifecycle()
        self.calls = CallPath(self, max_queue=self.max_queue, fair=self.enable_sharing)
        self.membership = Membership(self, events=self._events, pump=self._pump)
        # the registry's own dicts, under the names subclasses have always read
        self._instances = self.membership.instances
        self._health = self.membership.health
        self._started = asyncio.Event()  # set while running; calls made while starting wait
        self._tasks: list[asyncio.Task] = []
        #: metrics, in-flight or queue changed since the last "metrics" event
        self.dirty = False
        self.started_at: float | None = None

    # ---- what the call path sees (calls.Pool) ------------------------------------------
    @property
    def members(self) -> dict[str, ResourceInstance]:
        return self._instances

    @property
    def creating(self) -> int:
        return self.membership.creating

    async def wait_started(self) -> None:
        if self.lifecycle.state is PoolState.STARTING:
            await self._started.wait()
        if not self.lifecycle.running:
            raise NoResourceAvailable(
                f"the {self.name} provider is not running", hint="await provider.initialize()"
            )

    async def scale_up(self) -> ResourceInstance | None:
        return await self.membership.scale_up()

    def eject(self, instance: ResourceInstance, error: ResourceFailed) -> None:
        self.membership.eject(instance, error)

    def on_idle(self, instance: ResourceInstance) -> None:
        self.membership.drained.set()

    def mark_dirty(self) -> None:
        self.dirty = True

    # ---- lifecycle --------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return self.lifecycle.running

    @property
    def state(self) -> PoolState:
        return self.lifecycle.state

    async def initialize(self) -> None:
        """Create the initial and discovered resources, then start the background loops.
        Idempotent; works again after :meth:`shutdown`."""
        state = self.lifecycle.state
        if state is PoolState.RUNNING:
            return
        if state is PoolState.STARTING:
            await self.wait_started()
            return
        if state is PoolState.STOPPING:
            raise NoResourceAvailable(f"the {self.name} provider is shutting down")
        self.lifecycle.start()
        self.started_at = time.time()
        try:
            configs = [(c, "explicit") for c in await self.initial_resources()]
            if self.enable_auto_discovery:
                configs += [(c, "discovered") for c in await self.membership.discover() or []]
            members = self.membership
            await asyncio.gather(*(members.add(c, origin, check=True) for c, origin in configs))
            while len(self._instances) < self.min_instances:
                if await members.scale_up() is None:
                    break
        except BaseException:
            await self.shutdown()
            raise
        if self.lifecycle.state is not PoolState.STARTING:
            return  # shut down while starting
        self.lifecycle.started()
        self._started.set()
        self._tasks = [asyncio.create_task(self._health_loop(), name=f"{self.name}-health")]
        self._tasks.append(asyncio.create_task(self._maintenance_loop(), name=f"{self.name}-tick"))
        if self.enable_auto_discovery:
            self._tasks.append(
                asyncio.create_task(self._discovery_loop(), name=f"{self.name}-discovery")
            )

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop taking calls, let running calls finish for ``grace`` seconds (default: the
        pool's ``shutdown_grace``), cancel the rest with a clear error, destroy every
        resource. Resources still being created are destroyed when their creation ends."""
        if self.lifecycle.state in (PoolState.STOPPED, PoolState.STOPPING):
            return
        self.lifecycle.stop()
        self._started.set()  # calls waiting for the start learn it is not coming
        self._started = asyncio.Event()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.calls.queue.fail_all(NoResourceAvailable(f"{self.name} provider was shut down"))
        grace = self.shutdown_grace if grace is None else grace
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(loop.time() + grace):
                while any(i.in_flight for i in self._instances.values()):
                    self.membership.drained.clear()
                    await self.membership.drained.wait()
        except TimeoutError:
            if self.calls.abort_running():
                await asyncio.sleep(0)  # let the cancelled calls unwind
        instances = list(self._instances.values())
        await asyncio.gather(*(self.membership.destroy(inst) for inst in instances))
        self.lifecycle.stopped()

    async def __aenter__(self):
        await self.initialize()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # ---- membership -------------------------------------------------------------------
    @property
    def instances(self) -> list[ResourceInstance]:
        return list(self._instances.values())

    def get_instance(self, instance_id: str) -> ResourceInstance:
        return self.membership.get(instance_id)

    async def add_resource(self, config: ConfigT) -> ResourceInstance:
        """Add one resource at run time (calls ``create_resource`` and checks it once)."""
        instance = await self.membership.add(config, "explicit", check=True, raise_errors=True)
        assert instance is not None
        return instance

    async def remove_resource(self, instance_id: str, drain_timeout: float = 60.0) -> None:
        """Stop routing to the instance, wait for its in-flight calls, then destroy it."""
        await self.membership.remove(instance_id, drain_timeout)

    # ---- operator controls ------------------------------------------------------------
    def drain(self, instance_id: str) -> None:
        """Take the instance out of rotation (it stays in the pool)."""
        instance = self.get_instance(instance_id)
        instance.enabled = False
        self._events.emit(HubEvent("status", self.name, instance_id, "enabled", "drained"))
        self._pump()  # its waiters may have nowhere else to go: they must fail now

    def enable(self, instance_id: str) -> None:
        instance = self.get_instance(instance_id)
        instance.enabled = True
        self._events.emit(HubEvent("status", self.name, instance_id, "drained", "enabled"))
        self._pump()

    def reset_breaker(self, instance_id: str) -> None:
        breaker = self.get_instance(instance_id).breaker
        assert breaker is not None
        breaker.reset()
        self._pump()

    def set_strategy(self, strategy: str) -> None:
        old, self.strategy = self.strategy, Balancer.check(strategy)
        self._events.emit(HubEvent("strategy", self.name, None, old, self.strategy))

    def subscribe(self, callback: Callable[[HubEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` on status, breaker, membership, strategy and (coalesced)
        metrics changes. Returns a function that unsubscribes."""
        return self._events.subscribe(callback)

    def _set_status(self, instance: ResourceInstance, status: ResourceStatus) -> None:
        self.membership.set_status(instance, status)

    def _pump(self) -> None:
        """Serve the waiters the pool can serve now; fail those it never can."""
        if self.calls.queue:
            self.calls.dispatch(full=True)

    # ---- calls ------------------------------------------------------------------------
    async def execute(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        strategy: str | None = None,
        instance: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one call on the pool, failing over to another instance on infrastructure
        errors. ``timeout`` (default ``call_timeout``) is the deadline of the whole call,
        queueing and every attempt included. The result gains ``instance`` and
        ``latency_ms``."""
        return await self.calls.execute(
            method, {} if params is None else params, strategy, instance, timeout
        )

    def stream(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        strategy: str | None = None,
        instance: str | None = None,
        timeout: float | None = None,
        first_token_timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream a call's chunks. Fails over like :meth:`execute` until the first chunk;
        after that an error is raised to the caller (output cannot be taken back).
        ``timeout`` is the deadline of the whole stream; ``first_token_timeout`` (default:
        the pool's) bounds the wait for each attempt's first chunk."""
        return self.calls.stream(
            method,
            {} if params is None else params,
            strategy,
            instance,
            timeout,
            first_token_timeout,
        )

    # ---- background loops -------------------------------------------------------------
    async def check_health_now(self) -> None:
        """Run one round of health checks on every instance (concurrently)."""
        await self.membership.check_all()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_check_interval)
            try:
                await self.check_health_now()
            except Exception:
                log.exception("%s: health round failed", self.name)

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(_TICK)
            try:
                self._pump()  # breakers reopen for trials by the clock, not by an event
                await self.membership.reap_idle()
                if self.dirty:
                    self.dirty = False
                    self._events.emit(HubEvent("metrics", self.name))
            except Exception:
                log.exception("%s: maintenance failed", self.name)

    async def discover_now(self) -> None:
        """One discovery pass: add new resources, retire discovered ones that vanished."""
        await self.membership.discover_now(self.remove_resource)

    async def _discovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.discovery_interval)
            try:
                await self.discover_now()
            except Exception:
                log.exception("%s: discovery round failed", self.name)

    def health_error(self, instance_id: str) -> str | None:
        """Why the instance's last health check failed; None when it passed."""
        return self.membership.health_error(instance_id)

    #: Builds a displayable panel for :meth:`panel`. The hub knows nothing of Jupyter; the
    #: top-level package installs the ipywidgets panel here (see gleitzeit_jupyter/__init__).
    panel_factory: Callable[[HubProvider], Any] | None = None

    def panel(self) -> Any:
        """A live status panel of this pool (an ipywidgets widget in a notebook)."""
        if HubProvider.panel_factory is None:
            raise UserError(
                "no panel renderer is installed",
                hint="import gleitzeit_jupyter (with ipywidgets installed) to get panels",
            )
        return HubProvider.panel_factory(self)

    # ---- snapshots --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of the pool (what widgets and the sidebar render)."""
        return snapshot.status(self)

    def metrics(self, window: bool = False):
        """pandas DataFrame: one row per instance plus an ``ALL`` row. ``window=True``
        describes the recent ``metrics_window`` seconds instead of all time."""
        return snapshot.metrics_frame(self, window)

    def metrics_history(self):
        """pandas DataFrame time series per instance: requests, errors, p50/p95/p99."""
        return snapshot.history_frame(self)

    @property
    def queue_length(self) -> int:
        return len(self.calls.queue)

    @property
    def queue_tenants(self) -> int:
        return self.calls.queue.tenants
