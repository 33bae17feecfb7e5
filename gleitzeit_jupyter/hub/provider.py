"""HubProvider: one class with pooling, health, balancing, failover, breaker and metrics.

A subclass fills in how to create, destroy, call and check one resource; everything about
running a pool of them lives here. All methods run on one asyncio loop; nothing blocks it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic

from . import policy as _policy
from . import snapshot
from .balancing import Balancer
from .breaker import CircuitBreaker, CircuitState
from .calls import CallPath, as_failure, default_hook
from .errors import HubError, NoResourceAvailable, ResourceFailed, UserError
from .events import EventBus, HubEvent
from .health import HealthTracker
from .instance import ConfigT, ResourceInstance, ResourceStatus
from .lifecycle import Lifecycle, PoolState
from .metrics import InstanceMetrics
from .policy import BreakerPolicy, HealthPolicy, PoolPolicy, RetryPolicy

__all__ = ["HubProvider"]

log = logging.getLogger(__name__)

_ROUTABLE = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
_GONE = (ResourceStatus.DRAINING, ResourceStatus.STOPPED)
_TICK = 1.0  # seconds between maintenance passes (idle reaping, coalesced metrics events)


class _Flat:
    """A flat keyword of the constructor as an attribute: reads and writes its policy's field."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.policy = f"{_policy.FLAT[name]}_policy"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.policy), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(getattr(obj, self.policy), self.name, _policy.checked(self.name, value))


class HubProvider(Generic[ConfigT]):
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

    max_instances = _Flat()
    min_instances = _Flat()
    idle_timeout = _Flat()
    enable_auto_discovery = _Flat()
    discovery_interval = _Flat()
    enable_sharing = _Flat()
    max_queue = _Flat()
    shutdown_grace = _Flat()
    metrics_window = _Flat()
    health_check_interval = _Flat()
    health_check_timeout = _Flat()
    unhealthy_threshold = _Flat()
    healthy_threshold = _Flat()
    degraded_latency_ms = _Flat()
    breaker_failure_threshold = _Flat()
    breaker_recovery_timeout = _Flat()
    breaker_half_open_max = _Flat()
    retries = _Flat()
    retry_budget_ratio = _Flat()
    min_retries_per_s = _Flat()
    retry_budget_ttl = _Flat()
    call_timeout = _Flat()
    first_token_timeout = _Flat()

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

        self._instances: dict[str, ResourceInstance] = {}
        self._health: dict[str, HealthTracker] = {}
        self._keys: dict[str, str] = {}  # instance id -> resource_key (for discovery diffing)
        self._events = EventBus()
        self.lifecycle = Lifecycle()
        self.calls = CallPath(self, max_queue=self.max_queue, fair=self.enable_sharing)
        self._scale_lock = asyncio.Lock()
        self._started = asyncio.Event()  # set while running; calls made while starting wait
        # Keys being created, so two concurrent adds of one config (add_resource racing
        # discovery) do not both create it.
        self._adding: set[str] = set()
        self._creating = 0  # resources being created on demand (counted against the maximum)
        self._drained = asyncio.Event()
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
        return self._creating

    async def wait_started(self) -> None:
        if self.lifecycle.state is PoolState.STARTING:
            await self._started.wait()
        if not self.lifecycle.running:
            raise NoResourceAvailable(
                f"the {self.name} provider is not running", hint="await provider.initialize()"
            )

    async def scale_up(self) -> ResourceInstance | None:
        return await self._scale_up()

    def eject(self, instance: ResourceInstance, error: ResourceFailed) -> None:
        """Passive health: the instance refused a call outright, so it is down now, not
        after ``unhealthy_threshold`` health intervals."""
        tracker = self._health.get(instance.id)
        if tracker is None or instance.status in _GONE:
            return
        tracker.eject(str(error))
        self._set_status(instance, ResourceStatus.UNHEALTHY)

    def on_idle(self, instance: ResourceInstance) -> None:
        self._drained.set()

    def mark_dirty(self) -> None:
        self.dirty = True

    # ---- hooks ------------------------------------------------------------------------
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
                configs += [(c, "discovered") for c in await self._discover() or []]
            await asyncio.gather(*(self._add(c, origin, check=True) for c, origin in configs))
            while len(self._instances) < self.min_instances:
                if await self._scale_up() is None:
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
                    self._drained.clear()
                    await self._drained.wait()
        except TimeoutError:
            if self.calls.abort_running():
                await asyncio.sleep(0)  # let the cancelled calls unwind
        instances = list(self._instances.values())
        await asyncio.gather(*(self._destroy(inst) for inst in instances))
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
        try:
            return self._instances[instance_id]
        except KeyError:
            known = ", ".join(self._instances) or "none"
            raise UserError(
                f"no instance {instance_id!r} in the {self.name} pool", hint=f"known: {known}"
            ) from None

    async def add_resource(self, config: ConfigT) -> ResourceInstance:
        """Add one resource at run time (calls ``create_resource`` and checks it once)."""
        instance = await self._add(config, "explicit", check=True, raise_errors=True)
        assert instance is not None
        return instance

    async def remove_resource(self, instance_id: str, drain_timeout: float = 60.0) -> None:
        """Stop routing to the instance, wait for its in-flight calls, then destroy it."""
        instance = self.get_instance(instance_id)
        self._set_status(instance, ResourceStatus.DRAINING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while instance.in_flight > 0 and loop.time() < deadline:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), deadline - loop.time())
            except TimeoutError:
                break
        await self._destroy(instance)

    async def _add(
        self, config: ConfigT, origin: str, *, check: bool, raise_errors: bool = False
    ) -> ResourceInstance | None:
        key = self.resource_key(config)
        if key in self._keys.values() or key in self._adding:
            if raise_errors:
                raise UserError(f"{key} is already in the {self.name} pool")
            return None
        self._adding.add(key)
        try:
            return await self._create(config, origin, key, check, raise_errors)
        finally:
            self._adding.discard(key)

    async def _create(
        self, config: ConfigT, origin: str, key: str, check: bool, raise_errors: bool
    ) -> ResourceInstance | None:
        generation = self.lifecycle.generation
        if not self.lifecycle.current(generation):
            raise NoResourceAvailable(f"the {self.name} provider is not running")
        try:
            instance = await self.create_resource(config)
        except Exception as exc:
            if not raise_errors:
                log.warning("%s: could not create %s: %s", self.name, key, exc)
                return None
            if isinstance(exc, HubError):
                raise
            raise as_failure(exc, ResourceInstance(id=key, config=config)) from exc
        if not self.lifecycle.current(generation):
            # the pool stopped (or stopped and restarted) while this was being created
            await self._discard(instance)
            raise NoResourceAvailable(f"the {self.name} provider was shut down")
        if instance.id in self._instances:
            await self._discard(instance)
            raise UserError(f"instance id {instance.id!r} is already in the {self.name} pool")
        self._register(instance, origin, key)
        if check:
            await self._check_one(instance)
        else:
            self._set_status(instance, ResourceStatus.HEALTHY)
        return instance

    async def _discard(self, instance: ResourceInstance) -> None:
        """Destroy a resource that never joined the pool."""
        instance.status = ResourceStatus.STOPPED
        try:
            await self.destroy_resource(instance)
        except Exception as exc:
            log.warning("%s: destroying %s failed: %s", self.name, instance.id, exc)

    def _register(self, instance: ResourceInstance, origin: str, key: str) -> None:
        instance.origin = origin
        instance.status = ResourceStatus.STARTING
        instance.metrics = InstanceMetrics(window=self.metrics_window)

        def on_breaker(old: CircuitState, new: CircuitState, ident: str = instance.id) -> None:
            self._events.emit(HubEvent("breaker", self.name, ident, old, new))
            self._pump()  # waiters may be servable now, or never (every breaker open)

        b = self.breaker_policy
        instance.breaker = CircuitBreaker(
            b.breaker_failure_threshold,
            b.breaker_recovery_timeout,
            b.breaker_half_open_max,
            clock=self.clock,
            on_change=on_breaker,
        )
        self._instances[instance.id] = instance
        self._keys[instance.id] = key
        h = self.health_policy
        self._health[instance.id] = HealthTracker(
            h.unhealthy_threshold, h.healthy_threshold, h.degraded_latency_ms
        )
        self._events.emit(HubEvent("membership", self.name, instance.id, None, "added"))

    async def _destroy(self, instance: ResourceInstance) -> None:
        if self._instances.pop(instance.id, None) is None:
            return
        self._keys.pop(instance.id, None)
        self._health.pop(instance.id, None)
        self._set_status(instance, ResourceStatus.STOPPED)
        try:
            await self.destroy_resource(instance)
        except Exception as exc:
            log.warning("%s: destroying %s failed: %s", self.name, instance.id, exc)
        self._events.emit(HubEvent("membership", self.name, instance.id, "added", "removed"))
        self._pump()  # waiters that can no longer be served must learn it

    async def _scale_up(self) -> ResourceInstance | None:
        """Create one resource on demand; None when at the maximum or the provider can't."""
        async with self._scale_lock:
            if len(self._instances) + self._creating >= self.max_instances:
                return None
            config = await self.config_for_new_resource()
            if config is None:
                return None
            self._creating += 1
        try:
            return await self._add(config, "scaled", check=False, raise_errors=True)
        finally:
            self._creating -= 1
            self._pump()  # waiters held back while we created must learn the outcome

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
        old = instance.status
        if old is status:
            return
        instance.status = status
        self._events.emit(HubEvent("status", self.name, instance.id, old, status))
        self._pump()

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
    async def _check_one(self, instance: ResourceInstance) -> None:
        started = time.perf_counter()
        error = None
        try:
            ok = bool(
                await asyncio.wait_for(
                    self.check_resource_health(instance), self.health_check_timeout
                )
            )
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            ok, error = False, f"no answer within {self.health_check_timeout:g} s"
        except Exception as exc:
            ok, error = False, str(exc) or type(exc).__name__
        if not ok and error is None:
            error = "health check failed"
        latency_ms = (time.perf_counter() - started) * 1000.0
        tracker = self._health.get(instance.id)
        if tracker is None or instance.id not in self._instances:
            return  # removed while we checked
        span = max(30.0, 2 * self.health_check_interval)
        rate = instance.metrics.recent_success_rate(span) if instance.metrics else None
        status = tracker.observe(instance.status, ok, latency_ms, rate, error)
        self._set_status(instance, status)

    async def check_health_now(self) -> None:
        """Run one round of health checks on every instance (concurrently)."""
        instances = [i for i in self._instances.values() if i.status not in _GONE]
        await asyncio.gather(*(self._check_one(i) for i in instances))

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
                await self._reap_idle()
                if self.dirty:
                    self.dirty = False
                    self._events.emit(HubEvent("metrics", self.name))
            except Exception:
                log.exception("%s: maintenance failed", self.name)

    async def _reap_idle(self) -> None:
        now = time.monotonic()
        for inst in list(self._instances.values()):
            if len(self._instances) <= self.min_instances:
                return
            if (
                inst.origin == "scaled"
                and inst.in_flight == 0
                and now - inst.last_used >= self.idle_timeout
            ):
                await self._destroy(inst)

    async def _discover(self) -> list[ConfigT] | None:
        """What discovery finds now; None when discovery itself failed."""
        try:
            return list(await self.discover_resources())
        except Exception as exc:
            log.warning("%s: discovery failed: %s", self.name, exc)
            return None

    async def discover_now(self) -> None:
        """One discovery pass: add new resources, retire discovered ones that vanished."""
        configs = await self._discover()
        if configs is None:
            # A failed discovery is not "nothing found": it must not retire anything.
            return
        found = {self.resource_key(c): c for c in configs}
        known = set(self._keys.values())
        await asyncio.gather(
            *(self._add(c, "discovered", check=True) for k, c in found.items() if k not in known)
        )
        for inst in list(self._instances.values()):
            if inst.origin == "discovered" and self._keys.get(inst.id) not in found:
                await self.remove_resource(inst.id)

    async def _discovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.discovery_interval)
            try:
                await self.discover_now()
            except Exception:
                log.exception("%s: discovery round failed", self.name)

    def health_error(self, instance_id: str) -> str | None:
        """Why the instance's last health check failed; None when it passed."""
        tracker = self._health.get(instance_id)
        return tracker.last_error if tracker is not None else None

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
