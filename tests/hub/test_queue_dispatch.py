"""The queue serves a waiter as soon as any instance that accepts it has room, whatever waits
ahead of it; changes to the pool wake waiters, and a waiter nobody can serve fails at once."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import wait_until

from gleitzeit_jupyter.hub import NoResourceAvailable
from gleitzeit_jupyter.testing.memory import MemoryConfig


async def test_a_call_for_an_idle_instance_does_not_wait_behind_another_models_call(pool):
    p = await pool(
        [MemoryConfig("x", capacity=1, accepts={"x"}), MemoryConfig("y", capacity=1, accepts={"y"})]
    )
    gate = asyncio.Event()
    busy = asyncio.create_task(p.execute("m", {"model": "x", "until": gate}))
    await wait_until(lambda: p.get_instance("x").in_flight == 1)
    queued_x = asyncio.create_task(p.execute("m", {"model": "x", "value": "x2"}))
    await wait_until(lambda: p.queue_length == 1)
    # y's instance is idle: its call must not queue behind the waiting x call
    r = await asyncio.wait_for(p.execute("m", {"model": "y", "value": "y"}), 1.0)
    assert r["instance"] == "y"
    gate.set()
    assert (await queued_x)["instance"] == "x"
    await busy


async def test_a_queued_waiter_is_served_by_a_slot_the_head_cannot_use(pool):
    p = await pool(
        [MemoryConfig("x", capacity=1, accepts={"x"}), MemoryConfig("y", capacity=1, accepts={"y"})]
    )
    gx, gy = asyncio.Event(), asyncio.Event()
    hold_x = asyncio.create_task(p.execute("m", {"model": "x", "until": gx}))
    hold_y = asyncio.create_task(p.execute("m", {"model": "y", "until": gy}))
    await wait_until(lambda: p.get_instance("y").in_flight == 1)
    head = asyncio.create_task(p.execute("m", {"model": "x"}))
    await wait_until(lambda: p.queue_length == 1)
    behind = asyncio.create_task(p.execute("m", {"model": "y"}))
    await wait_until(lambda: p.queue_length == 2)
    gy.set()  # y frees: the waiter behind the x call takes it now
    assert (await asyncio.wait_for(behind, 1.0))["instance"] == "y"
    assert not head.done()
    gx.set()
    await asyncio.gather(head, hold_x, hold_y)


async def test_draining_the_only_instance_fails_its_waiters_at_once(pool):
    p = await pool([MemoryConfig("a", capacity=1)])
    gate = asyncio.Event()
    busy = asyncio.create_task(p.execute("m", {"until": gate}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    waiting = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.queue_length == 1)
    p.drain("a")
    with pytest.raises(NoResourceAvailable, match="drained"):
        await asyncio.wait_for(waiting, 1.0)
    gate.set()
    await busy


async def test_removing_the_only_instance_fails_its_waiters(pool):
    p = await pool([MemoryConfig("a", capacity=1)])
    gate = asyncio.Event()
    busy = asyncio.create_task(p.execute("m", {"until": gate}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    waiting = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.queue_length == 1)
    remove = asyncio.create_task(p.remove_resource("a", drain_timeout=5.0))
    with pytest.raises(NoResourceAvailable):
        await asyncio.wait_for(waiting, 1.0)
    gate.set()
    await busy
    await remove


async def test_enabling_an_instance_serves_waiters(pool):
    p = await pool([MemoryConfig("a", capacity=1), MemoryConfig("b", capacity=1)])
    p.drain("b")
    gate = asyncio.Event()
    busy = asyncio.create_task(p.execute("m", {"until": gate}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    waiting = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.queue_length == 1)
    p.enable("b")
    assert (await asyncio.wait_for(waiting, 1.0))["instance"] == "b"
    gate.set()
    await busy


async def test_tenants_stay_fair_and_priority_holds_within_a_tenant(pool):
    p = await pool([MemoryConfig("a", capacity=1)], enable_sharing=True)
    gate = asyncio.Event()
    busy = asyncio.create_task(p.execute("m", {"until": gate}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    order: list[str] = []

    async def call(tag: str, tenant: str, priority: int = 0) -> None:
        await p.execute("m", {"tenant": tenant, "priority": priority})
        order.append(tag)

    tasks = [asyncio.create_task(call(f"big{k}", "big")) for k in range(4)]
    await wait_until(lambda: p.queue_length == 4)
    tasks.append(asyncio.create_task(call("small", "small")))
    tasks.append(asyncio.create_task(call("urgent", "big", priority=5)))
    await wait_until(lambda: p.queue_length == 6)
    gate.set()
    await asyncio.gather(busy, *tasks)
    assert order[0] == "urgent"  # big's best waiter first (big queued first)
    assert order.index("small") == 1  # then the other tenant, not big's backlog
