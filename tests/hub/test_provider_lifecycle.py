"""Issue 2, point 1: initialize / shutdown / ``async with``, re-initialise after shutdown, and
nothing (task, thread, resource) left behind."""

from __future__ import annotations

import asyncio
import threading

import pytest
from hub_helpers import cfgs, res, wait_until

from gleitzeit_jupyter.hub import NoResourceAvailable, ResourceStatus
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


def _tasks() -> set[asyncio.Task]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def _busy_provider(**options) -> MemoryProvider:
    # every background loop enabled and fast, so shutdown has something to stop
    options.setdefault("health_check_interval", 0.02)
    options.setdefault("discovery_interval", 0.02)
    return MemoryProvider(
        cfgs("a", "b"),
        enable_auto_discovery=True,
        discoverable=cfgs("d"),
        **options,
    )


async def test_calls_before_initialize_fail_clearly():
    p = MemoryProvider(cfgs("a"))
    assert not p.initialized
    with pytest.raises(NoResourceAvailable, match="not running"):
        await p.execute("m", {})
    assert p.instances == []


async def test_initialize_creates_checks_and_starts_the_loops():
    p = _busy_provider()
    await p.initialize()
    try:
        assert p.initialized
        assert {i.id for i in p.instances} == {"a", "b", "d"}
        assert all(i.status is ResourceStatus.HEALTHY for i in p.instances)
        assert all(res(p, n).health_checks >= 1 for n in "abd")  # checked once when added
        names = {t.get_name() for t in p._tasks}
        assert names == {"memory-health", "memory-tick", "memory-discovery"}
        before = res(p, "a").health_checks
        await wait_until(lambda: res(p, "a").health_checks >= before + 3)  # loop is running
        assert (await p.execute("m", {"value": 1}))["echo"] == 1
    finally:
        await p.shutdown()


async def test_initialize_is_idempotent():
    p = _busy_provider()
    await p.initialize()
    await p.initialize()
    try:
        assert p.created == 3
        assert len(p._tasks) == 3
    finally:
        await p.shutdown()


async def test_shutdown_destroys_everything_and_leaves_no_task_or_thread():
    threads_before = set(threading.enumerate())
    tasks_before = _tasks()
    p = _busy_provider(health_check_timeout=0.05)
    await p.initialize()
    res(p, "b").health_hang = True  # a health check in progress while we shut down
    await asyncio.gather(*(p.execute("m", {"latency": 0.01}) for _ in range(20)))
    await wait_until(lambda: p.health_active > 0)
    await p.shutdown()

    assert not p.initialized
    assert p.instances == []
    assert p.destroyed == 3
    assert all(r.destroyed for r in p.resources.values())
    assert p._tasks == []
    await asyncio.sleep(0)  # let cancelled tasks finish unwinding
    assert _tasks() == tasks_before
    assert p.health_active == 0  # the hanging check was cancelled, not abandoned
    assert set(threading.enumerate()) == threads_before
    # nothing runs any more
    checks = {n: r.health_checks for n, r in p.resources.items()}
    await asyncio.sleep(0.1)
    assert {n: r.health_checks for n, r in p.resources.items()} == checks
    with pytest.raises(NoResourceAvailable):
        await p.execute("m", {})


async def test_shutdown_fails_queued_calls_instead_of_leaving_them_waiting():
    p = MemoryProvider([MemoryConfig("a", capacity=1)], health_check_interval=60)
    await p.initialize()
    running = asyncio.create_task(p.execute("m", {"latency": 0.2}))
    queued = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.queue_length == 1)
    await p.shutdown()
    with pytest.raises(NoResourceAvailable, match="shut down"):
        await queued
    await running  # the call already on the resource finishes normally


async def test_async_with_initializes_and_shuts_down():
    tasks_before = _tasks()
    async with _busy_provider() as p:
        assert p.initialized
        assert (await p.execute("m", {"value": 2}))["echo"] == 2
    assert not p.initialized
    assert p.instances == []
    assert all(r.destroyed for r in p.resources.values())
    await asyncio.sleep(0)
    assert _tasks() == tasks_before


async def test_async_with_shuts_down_when_the_body_raises():
    p = _busy_provider()
    with pytest.raises(RuntimeError):
        async with p:
            raise RuntimeError("user code failed")
    assert not p.initialized
    assert p.destroyed == 3


async def test_reinitialize_after_shutdown():
    tasks_before = _tasks()
    p = _busy_provider()
    for round_ in range(3):
        await p.initialize()
        assert {i.id for i in p.instances} == {"a", "b", "d"}
        assert all(i.status is ResourceStatus.HEALTHY for i in p.instances)
        assert all(not r.destroyed for r in p.resources.values())
        results = await asyncio.gather(*(p.execute("m", {"value": k}) for k in range(10)))
        assert [r["echo"] for r in results] == list(range(10))
        before = res(p, "a").health_checks
        await wait_until(lambda b=before: res(p, "a").health_checks >= b + 2)
        await p.shutdown()
        assert p.created == p.destroyed == 3 * (round_ + 1)
        await asyncio.sleep(0)
        assert _tasks() == tasks_before
    # fresh metrics and breakers each time: old instances are gone, not reused
    await p.initialize()
    try:
        assert all(i.metrics.requests == 0 for i in p.instances)
    finally:
        await p.shutdown()


async def test_failed_initialize_cleans_up_and_can_be_retried():
    class Flaky(MemoryProvider):
        fail_next = True

        async def config_for_new_resource(self):
            if len(self._instances) == 1 and self.fail_next:
                self.fail_next = False
                raise RuntimeError("scaler exploded")
            return await super().config_for_new_resource()

    tasks_before = _tasks()
    p = Flaky(scale_template=MemoryConfig("s"), min_instances=2, health_check_interval=60)
    with pytest.raises(RuntimeError, match="scaler exploded"):
        await p.initialize()
    assert not p.initialized
    assert p.instances == []
    assert p.created == 1 and p.destroyed == 1  # the one created before the error
    await asyncio.sleep(0)
    assert _tasks() == tasks_before
    await p.initialize()
    try:
        assert len(p.instances) == 2
    finally:
        await p.shutdown()


async def test_one_resource_failing_to_start_does_not_block_the_others():
    class Picky(MemoryProvider):
        async def create_resource(self, config):
            if config.name == "broken":
                raise ConnectionRefusedError("no such host")
            return await super().create_resource(config)

    async with Picky(cfgs("a", "broken", "b"), health_check_interval=60) as p:
        assert {i.id for i in p.instances} == {"a", "b"}
        assert (await p.execute("m", {}))["instance"] in {"a", "b"}


async def test_a_concurrent_initialize_returns_only_when_the_pool_is_ready():
    class SlowStart(MemoryProvider):
        async def create_resource(self, config):
            await asyncio.sleep(0.05)
            return await super().create_resource(config)

    p = SlowStart(cfgs("a", "b"), health_check_interval=60)
    first = asyncio.create_task(p.initialize())
    await asyncio.sleep(0.01)  # the first is creating resources now
    await p.initialize()
    try:
        assert {i.id for i in p.instances} == {"a", "b"}
        assert len(p._tasks) == 2
        assert (await p.execute("m", {}))["instance"] in {"a", "b"}
        await first
        assert p.created == 2
    finally:
        await p.shutdown()
