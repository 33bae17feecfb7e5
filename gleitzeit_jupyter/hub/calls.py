"""The call path of a pool: route, reserve, call, account, fail over, within one deadline.

:class:`CallPath` is composed into :class:`HubProvider` and sees the pool only through the
:class:`Pool` interface. Every call runs through it, so it stays lean (see
``bench/hub_overhead.py``): no allocation beyond the call's own when an instance is free.

Rules it enforces:

- one deadline per call (``timeout`` or the pool's ``call_timeout``) over the queue wait, every
  attempt and a whole stream; a stream's first chunk has its own ``first_token_timeout``;
- a failure that provably never reached the instance (``ResourceFailed(started=False)``)
  ejects the instance and moves the call to another one, outside the retry budget;
- a failure that may have reached it is retried elsewhere only if the provider allows it, the
  call has attempts left, nothing was streamed yet and the pool's retry budget pays;
- breakers gate every route: OPEN admits nothing, HALF_OPEN at most its trial count; when no
  healthy instance is left, calls may go to unhealthy ones whose breaker admits them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol

from .balancing import Balancer
from .breaker import CircuitState
from .errors import (
    ExecutionTimeout,
    HubError,
    NoResourceAvailable,
    ResourceDeclined,
    ResourceFailed,
    UserError,
)
from .hooks import default_hook, is_default_hook
from .instance import ResourceInstance, ResourceStatus
from .lifecycle import Lifecycle
from .policy import RetryPolicy, checked
from .queueing import FairQueue
from .retry import RetryBudget

__all__ = ["CallPath", "Pool", "as_failure", "default_hook", "is_default_hook"]

_ROUTABLE = (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
_GONE = (ResourceStatus.DRAINING, ResourceStatus.STOPPED)
_OPEN = CircuitState.OPEN
_CLOSED = CircuitState.CLOSED
_HALF_OPEN = CircuitState.HALF_OPEN


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


class Pool(Protocol):
    """What the call path needs from the pool it routes over."""

    name: str
    strategy: str
    retry_started_calls: bool
    retry_policy: RetryPolicy
    lifecycle: Lifecycle
    clock: Callable[[], float]
    dirty: bool  # something a "metrics" event reports changed

    @property
    def members(self) -> dict[str, ResourceInstance]: ...
    @property
    def creating(self) -> int: ...
    async def wait_started(self) -> None: ...
    async def scale_up(self) -> ResourceInstance | None: ...
    def eject(self, instance: ResourceInstance, error: ResourceFailed) -> None: ...
    def on_idle(self, instance: ResourceInstance) -> None: ...

    # the provider's hooks
    async def execute_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> dict[str, Any]: ...
    def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]: ...
    def instance_accepts(self, instance: ResourceInstance, method: str, params: dict) -> bool: ...
    def instance_preference(self, instance: ResourceInstance, method: str, params: dict) -> int: ...
    def instance_cost(self, instance: ResourceInstance, method: str, params: dict) -> float: ...
    def no_instance_error(
        self, method: str, params: dict, instances: list[ResourceInstance]
    ) -> HubError | None: ...
    def validate(self, method: str, params: dict[str, Any]) -> None: ...


class CallPath:
    def __init__(self, pool: Pool, *, max_queue: int, fair: bool):
        self._pool = pool
        self.queue = FairQueue(max_queue, fair=fair)
        policy = pool.retry_policy
        self.budget = RetryBudget(
            policy.retry_budget_ratio,
            policy.min_retries_per_s,
            policy.retry_budget_ttl,
            clock=pool.clock,
        )
        self.balancer = Balancer()
        # tasks running a call, so shutdown can abort them (and only them)
        self._running: set[asyncio.Task] = set()
        self._aborted: set[asyncio.Task] = set()
        cls = type(pool)
        self._streams = not is_default_hook(cls.stream_on_resource)
        self._ranks = not is_default_hook(cls.instance_preference)

    # ---- calls ------------------------------------------------------------------------
    async def execute(
        self,
        method: str,
        params: dict[str, Any],
        strategy: str | None,
        pin: str | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        pool = self._pool
        strategy, deadline = await self._prepare(method, params, strategy, pin, timeout)
        tried: set[str] | None = None
        error: ResourceFailed | None = None
        retries = pool.retry_policy.retries
        task = asyncio.current_task()
        self._running.add(task)  # type: ignore[arg-type]
        try:
            while True:
                # the common case inline: nobody waits and an instance is free
                taken = (
                    None if self.queue else self._route(method, params, strategy, tried, pin, error)
                )
                if type(taken) is not tuple:
                    taken = await self._reserve(
                        method, params, strategy, tried, pin, error, deadline
                    )
                inst, trial = taken
                started = time.perf_counter()
                try:
                    if deadline is None:
                        result = await pool.execute_on_resource(inst, method, params)
                    else:
                        async with asyncio.timeout_at(deadline):
                            result = await pool.execute_on_resource(inst, method, params)
                except BaseException as exc:
                    error = self._finish_failed(inst, exc, started, trial, deadline, timeout)
                    if not self._again(error, pin, retries, deadline):
                        raise error from None
                    if error.started:
                        retries -= 1
                    if tried is None:
                        tried = set()
                    tried.add(inst.id)
                    continue
                latency_ms = (time.perf_counter() - started) * 1000.0
                self._finish_ok(inst, latency_ms, trial)
                result.setdefault("instance", inst.id)
                result.setdefault("latency_ms", latency_ms)
                return result
        except asyncio.CancelledError:
            # wherever it waited: for an instance, a scale-up or the instance's answer
            self._raise_if_aborted(task)  # type: ignore[arg-type]
            raise
        finally:
            self._running.discard(task)  # type: ignore[arg-type]
            self._aborted.discard(task)  # type: ignore[arg-type]

    async def stream(
        self,
        method: str,
        params: dict[str, Any],
        strategy: str | None,
        pin: str | None,
        timeout: float | None,
        first_token_timeout: float | None,
    ) -> AsyncIterator[dict[str, Any]]:
        pool = self._pool
        if not self._streams:
            raise UserError(f"{type(pool).__name__} does not stream {method!r}")
        strategy, deadline = await self._prepare(method, params, strategy, pin, timeout)
        if first_token_timeout is None:
            first_token_timeout = pool.retry_policy.first_token_timeout
        else:
            first_token_timeout = checked("first_token_timeout", first_token_timeout)
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        error: ResourceFailed | None = None
        retries = pool.retry_policy.retries
        while True:
            inst, trial = await self._reserve(method, params, strategy, tried, pin, error, deadline)
            task = asyncio.current_task()
            self._running.add(task)  # type: ignore[arg-type]
            started = time.perf_counter()
            chunks = None
            produced = done = False
            try:
                chunks = pool.stream_on_resource(inst, method, params)
                first_by = deadline
                if first_token_timeout is not None:
                    first_by = loop.time() + first_token_timeout
                    if deadline is not None:
                        first_by = min(first_by, deadline)
                try:
                    chunk = await _next(chunks, first_by)
                except TimeoutError:
                    if deadline is not None and loop.time() >= deadline:
                        raise
                    raise ExecutionTimeout(
                        f"no first token from {inst.id} within {first_token_timeout:g} s",
                        instance=inst.id,
                    ) from None
                produced = True
                while True:
                    chunk.setdefault("instance", inst.id)
                    done = chunk.get("done") is True
                    yield chunk
                    chunk = await _next(chunks, deadline)
            except StopAsyncIteration:
                self._finish_ok(inst, (time.perf_counter() - started) * 1000.0, trial)
                return
            except GeneratorExit:
                # The consumer stopped reading. After the final chunk that is a complete
                # call; before it, it says nothing about the instance.
                if done:
                    self._finish_ok(inst, (time.perf_counter() - started) * 1000.0, trial)
                else:
                    self._finish_neutral(inst, trial)
                raise
            except asyncio.CancelledError:
                self._finish_neutral(inst, trial)
                self._raise_if_aborted(task)  # type: ignore[arg-type]
                raise
            except BaseException as exc:
                error = self._finish_failed(inst, exc, started, trial, deadline, timeout)
                if produced or not self._again(error, pin, retries, deadline):
                    raise error from None
                if error.started:
                    retries -= 1
                tried.add(inst.id)
            finally:
                self._running.discard(task)  # type: ignore[arg-type]
                # cancelled outside this generator (the consumer's own await): forget it here
                self._aborted.discard(task)  # type: ignore[arg-type]
                if chunks is not None:
                    await chunks.aclose()  # type: ignore[attr-defined]

    def _raise_if_aborted(self, task: asyncio.Task) -> None:
        """A call that shutdown cancelled fails with a clear error; any other cancellation
        (the caller's own) is left alone."""
        if task not in self._aborted:
            return
        self._aborted.discard(task)
        task.uncancel()
        raise NoResourceAvailable(
            f"the {self._pool.name} provider shut down while the call ran",
            hint="the call was cancelled after the shutdown grace period",
        ) from None

    async def _prepare(self, method, params, strategy, pin, timeout):
        """Check the call before routing it; returns the strategy and the call's deadline."""
        pool = self._pool
        if not pool.lifecycle.running:
            await pool.wait_started()
        pool.validate(method, params)
        if "priority" in params:
            # checked here, not when queueing: a bad priority must fail even when idle
            try:
                int(params["priority"])
            except (TypeError, ValueError):
                raise UserError(
                    f"priority must be an integer, not {params['priority']!r}"
                ) from None
        strategy = pool.strategy if strategy is None else Balancer.check(strategy)
        if pin is not None and pin not in pool.members:
            known = ", ".join(pool.members) or "none"
            raise UserError(f"no instance {pin!r} in the {pool.name} pool", hint=f"known: {known}")
        if timeout is None:
            timeout = pool.retry_policy.call_timeout
        else:  # a caller's value: a bad one is their mistake, never an instance's failure
            timeout = checked("call_timeout", timeout, "timeout")
        self.budget.deposit()
        if timeout is None:
            return strategy, None
        return strategy, asyncio.get_running_loop().time() + timeout

    def _again(
        self, error: ResourceFailed, pin: str | None, retries: int, deadline: float | None
    ) -> bool:
        """May the call try another instance after ``error``?"""
        if pin is not None:
            return False
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            return False
        if not error.started:
            return True  # it never reached the instance: moving it costs nothing
        return retries > 0 and self._pool.retry_started_calls and self.budget.try_withdraw()

    # ---- outcomes ---------------------------------------------------------------------
    def _finish_ok(self, inst: ResourceInstance, latency_ms: float, trial: bool = False) -> None:
        inst.breaker.record_success(trial)  # type: ignore[union-attr]
        inst.metrics.record(latency_ms, True)  # type: ignore[union-attr]
        self._release(inst)

    def _finish_neutral(self, inst: ResourceInstance, trial: bool = False) -> None:
        inst.breaker.record_neutral(trial)  # type: ignore[union-attr]
        self._release(inst)

    def _finish_failed(
        self,
        inst: ResourceInstance,
        exc: BaseException,
        started: float,
        trial: bool,
        deadline: float | None,
        timeout: float | None,
    ) -> ResourceFailed:
        """Account for a failed attempt; re-raise what must not be retried, else return it."""
        if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            self._finish_neutral(inst, trial)
            raise exc
        if isinstance(exc, ResourceDeclined):
            self._finish_neutral(inst, trial)  # turned away, not failed: move on, eject nothing
            return exc
        if isinstance(exc, HubError) and not isinstance(exc, ResourceFailed):
            if exc.instance is None:
                exc.instance = inst.id
            inst.metrics.record_user_error(str(exc))  # type: ignore[union-attr]
            self._finish_neutral(inst, trial)
            raise exc
        if (
            isinstance(exc, TimeoutError)
            and deadline is not None
            and asyncio.get_running_loop().time() >= deadline
        ):
            limit = self._pool.retry_policy.call_timeout if timeout is None else timeout
            failure: ResourceFailed = ExecutionTimeout(
                f"call did not finish within its deadline of {limit:g} s", instance=inst.id
            )
        else:
            failure = as_failure(exc, inst)
        inst.breaker.record_failure(trial)  # type: ignore[union-attr]
        latency_ms = (time.perf_counter() - started) * 1000.0
        inst.metrics.record(latency_ms, False, str(failure))  # type: ignore[union-attr]
        self._release(inst)
        if not failure.started:
            self._pool.eject(inst, failure)
        return failure

    def _release(self, inst: ResourceInstance) -> None:
        inst.in_flight -= 1
        inst.last_used = time.monotonic()
        pool = self._pool
        pool.dirty = True
        if inst.in_flight == 0:
            pool.on_idle(inst)
        if self.queue:
            self.dispatch()

    # ---- routing ----------------------------------------------------------------------
    def _accepting(self, method, params, tried, pin) -> list[ResourceInstance]:
        members = self._pool.members
        if pin is not None:
            inst = members.get(pin)
            return [inst] if inst is not None and inst.status not in _GONE else []
        accepts = self._pool.instance_accepts
        return [
            i
            for i in members.values()
            if i.enabled
            and i.status not in _GONE
            and (tried is None or i.id not in tried)
            and accepts(i, method, params)
        ]

    def _route(self, method, params, strategy, tried, pin, error, can_grow=False) -> Any:
        """Reserve an instance for the call now: ``(instance, trial)``; None when it must
        wait (or, with ``can_grow``, try to scale up); a :class:`HubError` when no instance
        will ever take it."""
        pool = self._pool
        if not pool.lifecycle.running:
            return NoResourceAvailable(f"the {pool.name} provider was shut down")
        accepting = self._accepting(method, params, tried, pin)
        if not accepting:
            if (pool.creating or can_grow) and pin is None:
                return None  # a resource being (or about to be) created may take it
            return error or self._nothing_accepts(method, params, pin)
        ready: list[ResourceInstance] = []
        doubtful: list[ResourceInstance] = []
        healthy = False  # some routable instance admits calls (else: panic routing)
        gated = True  # every accepting breaker is OPEN
        for i in accepting:
            breaker = i.breaker
            state = breaker.state  # type: ignore[union-attr]
            if state is _OPEN:
                continue
            gated = False
            if state is _HALF_OPEN and breaker.trials >= breaker.half_open_max:  # type: ignore[union-attr]
                continue
            routable = i.status in _ROUTABLE
            healthy = healthy or routable
            if i.max_concurrency is None or i.in_flight < i.max_concurrency:
                (ready if routable else doubtful).append(i)
        if gated:
            if (pool.creating or can_grow) and pin is None:
                return None
            return error or self._all_open(accepting, pin)
        # Panic: with no healthy instance left, a doubtful one beats a certain failure.
        free = ready if healthy else doubtful
        if not free:
            return None
        # fleet's cost already weighs what preference tiers would (warm, busy): no tiers
        if len(free) > 1 and self._ranks and strategy != "fleet":
            ranks = [pool.instance_preference(i, method, params) for i in free]
            top = max(ranks)
            free = [i for i, r in zip(free, ranks, strict=True) if r == top]
        key = params.get("affinity_key") or params.get("session")
        cost = None
        if strategy == "fleet":
            cost = lambda i: pool.instance_cost(i, method, params)  # noqa: E731
        inst = self.balancer.choose(strategy, free, key, accepting, cost)
        trial = inst.breaker.admit() == "trial"  # type: ignore[union-attr]
        inst.in_flight += 1
        pool.dirty = True  # in-flight counts are news too (the next coalesced event)
        return inst, trial

    async def _reserve(self, method, params, strategy, tried, pin, error, deadline):
        """Route now, else scale up, else wait in the fair queue."""
        while True:
            taken = await self._route_or_grow(method, params, strategy, tried, pin, error)
            if taken is None:
                taken = await self._wait(method, params, strategy, tried, pin, error, deadline)
            if taken is not None:
                return taken

    async def _route_or_grow(self, method, params, strategy, tried, pin, error):
        """A reservation now, perhaps after a scale-up; None: the call must wait."""
        pool = self._pool
        while True:
            if self.queue:
                # Waiters first: a free slot goes to whoever waited for it. What is free
                # after this no waiter can use, so the new call may take it at once.
                self.dispatch()
            taken = self._route(method, params, strategy, tried, pin, error, True)
            if type(taken) is tuple:
                return taken
            if taken is not None:
                raise taken
            if pin is not None:
                return None
            try:
                grown = await pool.scale_up()
            except Exception as exc:
                grown = None
                # A failed scale-up fails the call only when nothing else could take it.
                if not self._accepting(method, params, tried, pin) and not pool.creating:
                    if isinstance(exc, HubError):
                        raise
                    raise NoResourceAvailable(
                        f"could not add a {pool.name} instance: {exc}"
                    ) from exc
            if grown is None:
                # the pool may have changed while scale_up awaited
                taken = self._route(method, params, strategy, tried, pin, error)
                if type(taken) is tuple:
                    return taken
                if taken is not None:
                    raise taken
                return None

    async def _wait(self, method, params, strategy, tried, pin, error, deadline):
        pool = self._pool
        waiter = self.queue.push(
            str(params.get("tenant", "")),
            int(params.get("priority", 0)),
            lambda: self._route(method, params, strategy, tried, pin, error),
        )
        pool.dirty = True  # the queue grew
        try:
            if deadline is None:
                inst, trial = await waiter.future
            else:
                async with asyncio.timeout_at(deadline):
                    inst, trial = await waiter.future
        except TimeoutError:
            self.queue.discard(waiter)
            raise ExecutionTimeout(
                f"no {pool.name} instance became free before the call's deadline",
                hint="the pool is saturated; add instances or raise the timeout",
            ) from None
        except BaseException:
            self.queue.discard(waiter)
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                inst, trial = fut.result()
                self._finish_neutral(inst, trial)  # served as we left: pass the slot on
            raise
        state = inst.breaker.state  # type: ignore[union-attr]
        if state is _CLOSED or (trial and state is _HALF_OPEN):
            return inst, trial
        # The breaker changed between handing over the slot and this call starting (another
        # call failed and opened it): an OPEN breaker admits nothing, and a HALF_OPEN one only
        # its trials. Give the slot back; the caller routes again.
        self._finish_neutral(inst, trial)
        return None

    def has_room(self) -> bool:
        """Some live instance has a free slot and a breaker that is not OPEN."""
        for i in self._pool.members.values():
            if (
                i.enabled
                and i.status not in _GONE
                and (i.max_concurrency is None or i.in_flight < i.max_concurrency)
                and i.breaker.state is not _OPEN  # type: ignore[union-attr]
            ):
                return True
        return False

    def dispatch(self, full: bool = False) -> None:
        """Hand free slots to waiters in fair order. ``full``: also visit waiters when no slot
        is free, so those no instance can ever serve fail now (after a drain, a removal, a
        breaker opening)."""
        if self.queue:
            self.queue.dispatch(None if full else self.has_room)

    # ---- shutdown ---------------------------------------------------------------------
    def abort_running(self) -> int:
        """Cancel every call that holds an instance; each fails with a clear error. Returns
        how many were cancelled."""
        n = 0
        for task in list(self._running):
            if task.done():
                self._running.discard(task)
            elif task is not asyncio.current_task():
                self._aborted.add(task)
                task.cancel()
                n += 1
        return n

    # ---- errors -----------------------------------------------------------------------
    def _nothing_accepts(self, method, params, pin) -> HubError:
        pool = self._pool
        if pin is not None:
            return NoResourceAvailable(f"instance {pin!r} is not available", instance=pin)
        instances = list(pool.members.values())
        custom = pool.no_instance_error(method, params, instances)
        if custom is not None:
            return custom
        if not instances:
            return NoResourceAvailable(
                f"the {pool.name} pool has no instances",
                hint="add one with add_resource() or check discovery",
            )
        return NoResourceAvailable(
            f"no {pool.name} instance can take {method!r}",
            hint="every instance is drained, removed or does not accept this call",
        )

    def _all_open(self, accepting: Iterable[ResourceInstance], pin: str | None) -> HubError:
        accepting = list(accepting)
        wait = min(i.breaker.retry_in() for i in accepting)  # type: ignore[union-attr]
        names = ", ".join(i.id for i in accepting)
        return NoResourceAvailable(
            f"every {self._pool.name} instance that can take this call is failing"
            f" (breaker open: {names}); next trial in {wait:.1f} s",
            instance=pin,
            hint="check the instances, or reset_breaker() once one is fixed",
        )


async def _next(chunks: AsyncIterator[dict[str, Any]], by: float | None) -> dict[str, Any]:
    if by is None:
        return await chunks.__anext__()
    async with asyncio.timeout_at(by):
        return await chunks.__anext__()
