"""Issue 2, point 2: pool limits and scaling, idle reaping, add/remove at run time with
draining of in-flight work."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import QUIET, Recorder, res, wait_until

from gleitzeit_jupyter.hub import NoResourceAvailable, ResourceStatus, UserError
from gleitzeit_jupyter.hub import provider as provider_module
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


class SlowScaler(MemoryProvider):
    """Creation takes a while, so concurrent callers really race to scale up."""

    async def config_for_new_resource(self):
        await asyncio.sleep(0.005)
        return await super().config_for_new_resource()

    async def create_resource(self, config):
        await asyncio.sleep(0.02)
        return await super().create_resource(config)


@pytest.fixture
def fast_tick(monkeypatch):
    monkeypatch.setattr(provider_module, "_TICK", 0.02)


def test_bad_limits_are_rejected():
    with pytest.raises(UserError):
        MemoryProvider(max_instances=0)
    with pytest.raises(UserError):
        MemoryProvider(min_instances=3, max_instances=2)


async def test_min_instances_are_created_at_start():
    async with MemoryProvider(
        scale_template=MemoryConfig("s"), min_instances=2, health_check_interval=60
    ) as p:
        assert len(p.instances) == 2
        assert {i.origin for i in p.instances} == {"scaled"}


async def test_scales_on_demand_and_concurrent_callers_never_overshoot_max():
    p = SlowScaler(
        scale_template=MemoryConfig("s", latency=0.03, capacity=1),
        max_instances=3,
        health_check_interval=60,
    )
    size = {"now": 0, "max": 0}

    def on_event(event):
        if event.kind == "membership":
            size["now"] += 1 if event.new == "added" else -1
            size["max"] = max(size["max"], size["now"])

    p.subscribe(on_event)
    async with p:
        assert p.instances == []
        results = await asyncio.gather(*(p.execute("m", {"value": k}) for k in range(40)))
        assert [r["echo"] for r in results] == list(range(40))
        assert p.created == 3
        assert size["max"] == 3
        assert len(p.instances) == 3
        # capacity 1 each: no resource ever ran two calls at once
        assert all(r.max_active == 1 for r in p.resources.values())


async def test_without_a_scaler_calls_queue_for_the_one_instance():
    async with MemoryProvider(
        [MemoryConfig("a", latency=0.005, capacity=1)], health_check_interval=60
    ) as p:
        await asyncio.gather(*(p.execute("m", {}) for _ in range(20)))
        assert p.created == 1
        assert res(p, "a").max_active == 1
        assert res(p, "a").calls == 20


async def test_idle_scaled_instances_above_min_are_reaped(fast_tick):
    async with MemoryProvider(
        scale_template=MemoryConfig("s", latency=0.03, capacity=1),
        min_instances=1,
        max_instances=4,
        idle_timeout=0.1,
        health_check_interval=60,
    ) as p:
        await asyncio.gather(*(p.execute("m", {}) for _ in range(12)))
        assert len(p.instances) == 4
        await wait_until(lambda: len(p.instances) == 1)
        assert p.destroyed == 3
        await asyncio.sleep(0.2)
        assert len(p.instances) == 1  # never below the minimum
        assert (await p.execute("m", {}))["instance"] == p.instances[0].id


async def test_nothing_is_reaped_before_idle_timeout(fast_tick):
    async with MemoryProvider(
        scale_template=MemoryConfig("s", latency=0.03, capacity=1),
        max_instances=3,
        idle_timeout=30,
        health_check_interval=60,
    ) as p:
        await asyncio.gather(*(p.execute("m", {}) for _ in range(9)))
        await asyncio.sleep(0.15)  # several maintenance ticks
        assert len(p.instances) == 3


async def test_busy_and_explicit_instances_are_not_reaped(fast_tick):
    async with MemoryProvider(
        [MemoryConfig("explicit")],
        scale_template=MemoryConfig("s", capacity=1),
        max_instances=3,
        idle_timeout=0.05,
        health_check_interval=60,
    ) as p:
        p.drain("explicit")  # force the next calls onto scaled instances
        slow = asyncio.create_task(p.execute("m", {"latency": 0.4}))
        await wait_until(lambda: len(p.instances) == 2)
        scaled = next(i for i in p.instances if i.origin == "scaled")
        await asyncio.sleep(0.2)  # idle_timeout passed, but it is busy
        assert scaled in p.instances and scaled.in_flight == 1
        await slow
        await wait_until(lambda: scaled not in p.instances)
        assert [i.id for i in p.instances] == ["explicit"]


async def test_add_resource_at_run_time(pool):
    p = await pool(["a"])
    rec = Recorder()
    p.subscribe(rec)
    inst = await p.add_resource(MemoryConfig("b"))
    assert inst.id == "b" and inst.status is ResourceStatus.HEALTHY
    assert {i.id for i in p.instances} == {"a", "b"}
    assert "added" in [new for _, new in rec.of("membership", "b")]
    assert (await p.execute("m", {}, instance="b"))["instance"] == "b"
    with pytest.raises(UserError, match="already in the memory pool"):
        await p.add_resource(MemoryConfig("b"))
    assert p.created == 2


async def test_add_resource_that_cannot_be_created_raises_resource_failed(pool):
    class Refusing(MemoryProvider):
        async def create_resource(self, config):
            raise ConnectionRefusedError("connection refused")

    p = Refusing([], health_check_interval=60)
    await p.initialize()
    try:
        with pytest.raises(Exception, match="connection refused") as info:
            await p.add_resource(MemoryConfig("x"))
        assert type(info.value).__name__ == "ResourceFailed"
        assert p.instances == []
    finally:
        await p.shutdown()


async def test_remove_resource_drains_in_flight_work_first(pool):
    p = await pool(["a", "b"])
    slow = [
        asyncio.create_task(p.execute("m", {"latency": 0.15, "value": k}, instance="a"))
        for k in range(3)
    ]
    await wait_until(lambda: p.get_instance("a").in_flight == 3)
    removal = asyncio.create_task(p.remove_resource("a"))
    await asyncio.sleep(0.01)
    assert p.get_instance("a").status is ResourceStatus.DRAINING
    # new work goes elsewhere while "a" drains
    assert {(await p.execute("m", {}))["instance"] for _ in range(10)} == {"b"}
    while not all(t.done() for t in slow):
        assert not res(p, "a").destroyed  # never destroyed under a running call
        await asyncio.sleep(0.005)
    assert [t.result()["echo"] for t in slow] == [0, 1, 2]
    await removal
    assert res(p, "a").destroyed
    assert [i.id for i in p.instances] == ["b"]
    with pytest.raises(UserError):
        await p.remove_resource("a")


async def test_remove_resource_gives_up_waiting_after_drain_timeout(pool):
    p = await pool(["a", "b"])
    res(p, "a").hang = True
    stuck = asyncio.create_task(p.execute("m", {}, instance="a"))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    await asyncio.wait_for(p.remove_resource("a", drain_timeout=0.05), 2.0)
    assert res(p, "a").destroyed
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck


async def test_removing_the_last_instance_fails_new_calls_clearly(pool):
    p = await pool(["a"])
    await p.remove_resource("a")
    with pytest.raises(NoResourceAvailable, match="no instances"):
        await p.execute("m", {})
    await p.add_resource(MemoryConfig("a2"))
    assert (await p.execute("m", {}))["instance"] == "a2"


async def test_calls_keep_flowing_while_the_pool_changes(pool):
    p = await pool(["a", "b"], strategy="round_robin")

    async def traffic():
        return [await p.execute("m", {"latency": 0.002}) for _ in range(60)]

    flow = asyncio.create_task(traffic())
    await asyncio.sleep(0.02)
    await p.add_resource(MemoryConfig("c"))
    await asyncio.sleep(0.02)
    await p.remove_resource("a")
    results = await flow
    assert len(results) == 60  # no call failed
    assert "c" in {r["instance"] for r in results}


# ---- waiting for capacity never spins the event loop (regressions) --------------------
@pytest.mark.timeout(10)
async def test_many_callers_on_an_empty_pool_wait_for_the_first_creations():
    # Used to hang: with the pool empty while resources were being created, every waiter
    # was woken at once, re-queued, and woken again without ever yielding.
    async with MemoryProvider(
        scale_template=MemoryConfig("s", latency=0.01, capacity=1),
        max_instances=3,
        health_check_interval=60,
    ) as p:
        results = await asyncio.gather(*(p.execute("m", {"value": k}) for k in range(12)))
        assert [r["echo"] for r in results] == list(range(12))
        assert p.created == 3


@pytest.mark.timeout(10)
async def test_waiting_while_an_instance_that_does_not_accept_the_call_is_idle(pool):
    # Used to hang: the idle "other" slot woke the waiter, which could not use it, re-queued
    # at the front and woke itself again, forever.
    p = await pool([MemoryConfig("m1-only", capacity=1, accepts={"m1"}), "other"])
    p.get_instance("other").max_concurrency = 1
    p.get_instance("other").config.accepts = {"m2"}
    first = asyncio.create_task(p.execute("m", {"model": "m1", "latency": 0.05}))
    await wait_until(lambda: p.get_instance("m1-only").in_flight == 1)
    second = await asyncio.wait_for(p.execute("m", {"model": "m1", "value": 2}), 5)
    assert second["instance"] == "m1-only" and second["echo"] == 2
    await first
    assert res(p, "other").calls == 0


@pytest.mark.timeout(10)
async def test_waiting_while_only_an_ejected_instance_is_idle(pool):
    p = await pool([MemoryConfig("busy", capacity=1), MemoryConfig("sick", capacity=1)])
    p._set_status(p.get_instance("sick"), ResourceStatus.UNHEALTHY)
    first = asyncio.create_task(p.execute("m", {"latency": 0.05}))
    await wait_until(lambda: p.get_instance("busy").in_flight == 1)
    second = await asyncio.wait_for(p.execute("m", {}), 5)
    assert second["instance"] == "busy"
    await first
    assert res(p, "sick").calls == 0


@pytest.mark.timeout(10)
async def test_failed_creation_wakes_the_callers_waiting_for_it():
    class Broken(MemoryProvider):
        async def create_resource(self, config):
            await asyncio.sleep(0.02)
            raise ConnectionRefusedError("cannot start")

    async with Broken(scale_template=MemoryConfig("s"), health_check_interval=60) as p:
        results = await asyncio.gather(
            *(p.execute("m", {}) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Exception) for r in results)
        assert all("cannot start" in str(r) or "no instances" in str(r) for r in results)


async def test_concurrent_adds_of_one_config_create_it_once(pool):
    p = await pool([])
    results = await asyncio.gather(
        p.add_resource(MemoryConfig("x")),
        p.add_resource(MemoryConfig("x")),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["ResourceInstance", "UserError"]
    assert p.created == 1 and [i.id for i in p.instances] == ["x"]
    assert not res(p, "x").destroyed
    assert (await p.execute("m", {}))["instance"] == "x"


async def test_a_call_made_while_the_pool_is_starting_waits_for_it():
    p = SlowScaler([MemoryConfig("a"), MemoryConfig("b")], **QUIET)
    starting = asyncio.create_task(p.initialize())
    await asyncio.sleep(0.005)  # initialize() holds its lock, creating the resources
    try:
        result = await asyncio.wait_for(p.execute("x", {"value": 1}), 2.0)
        assert result["echo"] == 1 and result["instance"] in ("a", "b")
        chunks = [c async for c in p.stream("x", {"chunks": 2})]
        assert len(chunks) == 2
    finally:
        await starting
        await p.shutdown()
