"""The call path of a HubProvider: route, reserve, call, account, fail over.

Kept apart from the pool's lifecycle in ``provider.py``; this is the code every call runs
through, so it stays lean (see ``bench/hub_overhead.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from .balancing import Balancer
from .errors import ExecutionTimeout, HubError, NoResourceAvailable, ResourceFailed, UserError
from .instance import ResourceInstance, ResourceStatus

__all__ = ["CallPath", "as_failure", "default_hook", "is_default_hook"]


def default_hook(fn):
    """Mark a base-class hook, so the call path can skip work a subclass did not ask for."""
    fn._hub_default = True
    return fn


def is_default_hook(fn) -> bool:
    return getattr(fn, "_hub_default", False)


_ROUTABLE = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
_GONE = (ResourceStatus.DRAINING, ResourceStatus.STOPPED)


def as_failure(exc: BaseException, instance: ResourceInstance) -> ResourceFailed:
    if isinstance(exc, ResourceFailed):
        if exc.instance is None:
            exc.instance = instance.id
        return exc
    if isinstance(exc, TimeoutError):
        return ExecutionTimeout("call timed out before producing output", instance=instance.id)
    detail = str(exc) or type(exc).__name__
    failure = ResourceFailed(f"{type(exc).__name__}: {detail}", instance=instance.id)
    failure.__cause__ = exc
    return failure


class CallPath:
    """Mixin of :class:`HubProvider` holding ``execute``, ``stream`` and routing."""

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
        errors. The result gains ``instance`` and ``latency_ms``."""
        params = {} if params is None else params
        strategy, timeout = await self._prepare(method, params, strategy, instance, timeout)
        tried: set[str] = set()
        error: ResourceFailed | None = None
        for attempt in range(self.retries + 1):
            if attempt and not self._may_retry(instance):
                break
            inst, trial = await self._acquire(
                method, params, strategy, tried, instance, error, timeout
            )
            started = time.perf_counter()
            try:
                call = self.execute_on_resource(inst, method, params)
                result = await (call if timeout is None else asyncio.wait_for(call, timeout))
            except BaseException as exc:
                error = self._finish_failed(inst, exc, started, trial)
                if error.started and not self.retry_started_calls:
                    raise error from None
                tried.add(inst.id)
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            self._finish_ok(inst, latency_ms, trial)
            result.setdefault("instance", inst.id)
            result.setdefault("latency_ms", latency_ms)
            return result
        assert error is not None
        raise error

    async def stream(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        strategy: str | None = None,
        instance: str | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream a call's chunks. Fails over like :meth:`execute` until the first chunk;
        after that an error is raised to the caller (output cannot be taken back).
        ``timeout`` bounds the wait for the first chunk."""
        params = {} if params is None else params
        if is_default_hook(type(self).stream_on_resource):
            raise UserError(f"{type(self).__name__} does not stream {method!r}")
        strategy, timeout = await self._prepare(method, params, strategy, instance, timeout)
        tried: set[str] = set()
        error: ResourceFailed | None = None
        for attempt in range(self.retries + 1):
            if attempt and not self._may_retry(instance):
                break
            inst, trial = await self._acquire(
                method, params, strategy, tried, instance, error, timeout
            )
            started = time.perf_counter()
            chunks = None
            produced = False
            try:
                chunks = self.stream_on_resource(inst, method, params)
                first = chunks.__anext__()
                chunk = await (first if timeout is None else asyncio.wait_for(first, timeout))
                produced = True
                while True:
                    chunk.setdefault("instance", inst.id)
                    yield chunk
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                self._finish_ok(inst, (time.perf_counter() - started) * 1000.0, trial)
                return
            except GeneratorExit:
                # the consumer stopped reading: says nothing about the instance
                self._finish_neutral(inst, trial)
                raise
            except BaseException as exc:
                error = self._finish_failed(inst, exc, started, trial)
                if produced or (error.started and not self.retry_started_calls):
                    raise error from None
                tried.add(inst.id)
            finally:
                if chunks is not None:
                    await chunks.aclose()
        assert error is not None
        raise error

    async def _prepare(self, method, params, strategy, instance, timeout):
        """Check the call before routing it; returns the strategy and timeout to use."""
        if self._init_lock.locked():  # initialize() is running: wait for the pool, not fail
            async with self._init_lock:
                pass
        if not self._initialized:
            raise NoResourceAvailable(
                f"the {self.name} provider is not running", hint="await provider.initialize()"
            )
        self.validate(method, params)
        if "priority" in params:
            # checked here, not when queueing: a bad priority must fail even when idle
            try:
                int(params["priority"])
            except (TypeError, ValueError):
                raise UserError(
                    f"priority must be an integer, not {params['priority']!r}"
                ) from None
        strategy = self.strategy if strategy is None else Balancer.check(strategy)
        if instance is not None:
            self.get_instance(instance)
        self._budget.deposit()
        return strategy, self.call_timeout if timeout is None else timeout

    def _may_retry(self, pin: str | None) -> bool:
        """Another attempt is allowed: the call is not pinned and the retry budget pays."""
        return pin is None and self._budget.try_withdraw()

    def _finish_ok(self, inst: ResourceInstance, latency_ms: float, trial: bool = False) -> None:
        inst.breaker.record_success(trial)  # type: ignore[union-attr]
        inst.metrics.record(latency_ms, True)  # type: ignore[union-attr]
        self._release(inst)

    def _finish_neutral(self, inst: ResourceInstance, trial: bool = False) -> None:
        inst.breaker.record_neutral(trial)  # type: ignore[union-attr]
        self._release(inst)

    def _finish_failed(
        self, inst: ResourceInstance, exc: BaseException, started: float, trial: bool = False
    ) -> ResourceFailed:
        """Account for a failed call; re-raise what must not be retried, else return it."""
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            self._finish_neutral(inst, trial)
            raise exc
        if isinstance(exc, HubError) and not isinstance(exc, ResourceFailed):
            if exc.instance is None:
                exc.instance = inst.id
            inst.metrics.record_user_error(str(exc))  # type: ignore[union-attr]
            self._finish_neutral(inst, trial)
            raise exc
        failure = as_failure(exc, inst)
        inst.breaker.record_failure(trial)  # type: ignore[union-attr]
        latency_ms = (time.perf_counter() - started) * 1000.0
        inst.metrics.record(latency_ms, False, str(failure))  # type: ignore[union-attr]
        self._release(inst)
        return failure

    def _release(self, inst: ResourceInstance) -> None:
        inst.in_flight -= 1
        inst.last_used = time.monotonic()
        self._dirty = True
        if inst.in_flight == 0:
            self._drained.set()
        if self._queue:
            self._pump()

    # ---- routing ----------------------------------------------------------------------
    def _accepting(self, method, params, tried, pin) -> list[ResourceInstance]:
        if pin is not None:
            inst = self._instances.get(pin)
            return [inst] if inst is not None and inst.status not in _GONE else []
        return [
            i
            for i in self._instances.values()
            if i.enabled
            and i.status not in _GONE
            and i.id not in tried
            and self.instance_accepts(i, method, params)
        ]

    def _pick(self, accepting, method, params, strategy) -> ResourceInstance | None:
        ready = [i for i in accepting if i.status in _ROUTABLE and i.breaker.can_admit()]  # type: ignore[union-attr]
        if not ready:
            ready = accepting  # panic mode: better a doubtful instance than a certain failure
        free = [i for i in ready if i.has_capacity]
        if not free:
            return None
        if len(free) > 1 and not is_default_hook(type(self).instance_preference):
            ranks = [self.instance_preference(i, method, params) for i in free]
            top = max(ranks)
            free = [i for i, r in zip(free, ranks, strict=True) if r == top]
        key = params.get("affinity_key") or params.get("session")
        return self._balancer.choose(strategy, free, key, accepting)

    async def _acquire(self, method, params, strategy, tried, pin, error, timeout):
        """Reserve an instance for one call: pick, else scale up, else wait fairly."""
        ticket = False  # woken from the queue: may take a slot ahead of new arrivals
        hops = 0  # how many waiters passed the current wake-up on before us
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            accepting = self._accepting(method, params, tried, pin)
            taken = self._take(accepting, method, params, strategy, ticket)
            if taken is not None:
                return taken
            if pin is None and await self._scale_up() is not None:
                continue
            # Look again before sleeping: the pool may have changed while _scale_up awaited,
            # and a slot freed then woke nobody.
            accepting = self._accepting(method, params, tried, pin)
            taken = self._take(accepting, method, params, strategy, ticket)
            if taken is not None:
                return taken
            if not accepting and not self._creating:
                if error is not None:
                    raise error
                raise self._nothing_accepts(method, params, pin)
            waiter = self._queue.push(
                str(params.get("tenant", "")), int(params.get("priority", 0)), front=ticket
            )
            self._dirty = True  # the queue grew
            # A woken waiter that still cannot route (the free slot is on an instance
            # that is ejected, does not accept this call, or was tried already) must not pump:
            # it would wake itself again at once and spin the event loop forever. It passes
            # the wake-up on to another tenant's waiter instead, at most once around the
            # queue, then sleeps until the next release / status / membership change.
            if not ticket:
                self._pump()
            elif hops < len(self._queue):
                self._queue.wake_next(hops + 1, skip=waiter)
            try:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                hops = await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                self._queue.discard(waiter)
                raise ExecutionTimeout(
                    f"no {self.name} instance became free within {timeout:g} s",
                    hint="the pool is saturated; add instances or raise the timeout",
                ) from None
            except BaseException:
                self._queue.discard(waiter)
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._pump()  # we were woken but leave: hand the wake-up on
                raise
            ticket = True

    def _take(
        self, accepting, method, params, strategy, ticket
    ) -> tuple[ResourceInstance, bool] | None:
        """Pick and reserve an instance, unless the call must queue behind waiters. Returns
        the instance and whether the call is a half-open trial of its breaker."""
        if not accepting or not (ticket or not self._queue):
            return None
        inst = self._pick(accepting, method, params, strategy)
        if inst is None:
            return None
        # None (rejected) only in panic routing, where the call goes ahead regardless
        trial = inst.breaker.admit() == "trial"  # type: ignore[union-attr]
        inst.in_flight += 1
        self._dirty = True  # in-flight counts are news too (the next coalesced event)
        if ticket:
            self._pump()  # pass spare capacity on to the next waiter
        return inst, trial

    def _pump(self) -> None:
        """Wake as many waiters (in fair order) as there are free slots; each re-tries
        routing. An empty pool wakes everyone, so they fail at once with a clear error."""
        waiting = len(self._queue)
        if not waiting:
            return
        # While the first resources are still being created an empty pool must not wake
        # everyone (they would re-queue and be woken again without ever yielding); _scale_up
        # pumps when a creation ends.
        slots = 0 if self._instances or self._creating else waiting
        for i in self._instances.values():
            if i.enabled and i.status not in _GONE:
                if i.max_concurrency is None:
                    slots = waiting
                    break
                slots += max(0, i.max_concurrency - i.in_flight)
        for _ in range(min(slots, waiting)):
            if not self._queue.wake_next():
                break

    def _nothing_accepts(self, method, params, pin) -> HubError:
        if pin is not None:
            return NoResourceAvailable(f"instance {pin!r} is not available", instance=pin)
        instances = list(self._instances.values())
        custom = self.no_instance_error(method, params, instances)
        if custom is not None:
            return custom
        if not instances:
            return NoResourceAvailable(
                f"the {self.name} pool has no instances",
                hint="add one with add_resource() or check discovery",
            )
        return NoResourceAvailable(
            f"no {self.name} instance can take {method!r}",
            hint="every instance is drained, removed or does not accept this call",
        )
