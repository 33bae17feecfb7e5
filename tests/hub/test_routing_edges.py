"""Routing corner cases: a wake-up nobody can use is passed on; fast failures look costly."""

from __future__ import annotations

import asyncio

from hub_helpers import wait_until

from gleitzeit_jupyter.testing.memory import MemoryConfig


async def test_a_wakeup_the_first_waiter_cannot_use_is_passed_to_one_who_can(pool):
    # a has model x only, b has model y only; both hold their single slot.
    p = await pool(
        [
            MemoryConfig("a", capacity=1, accepts={"x"}),
            MemoryConfig("b", capacity=1, accepts={"y"}),
        ],
        enable_sharing=True,
    )
    hold_a, hold_b = asyncio.Event(), asyncio.Event()
    busy_a = asyncio.create_task(p.execute("m", {"model": "x", "until": hold_a}))
    busy_b = asyncio.create_task(p.execute("m", {"model": "y", "until": hold_b}))
    await wait_until(lambda: p.resources["a"].active == 1 and p.resources["b"].active == 1)
    # t1 queues first (wants a), t2 second (wants b)
    wants_a = asyncio.create_task(p.execute("m", {"model": "x", "tenant": "t1"}))
    await wait_until(lambda: p.queue_length == 1)
    wants_b = asyncio.create_task(p.execute("m", {"model": "y", "tenant": "t2"}))
    await wait_until(lambda: p.queue_length == 2)

    hold_b.set()  # b's slot frees; the fair order wakes t1 first, who cannot use it
    await asyncio.wait_for(wants_b, 1.0)  # ... and must hand the wake-up to t2
    assert not wants_a.done() and p.resources["a"].active == 1

    hold_a.set()
    await asyncio.wait_for(asyncio.gather(busy_a, busy_b, wants_a), 1.0)


async def test_least_latency_does_not_prefer_an_instance_that_fails_fast(pool):
    p = await pool(
        [MemoryConfig("good", latency=0.002), MemoryConfig("bad")],
        strategy="least_latency",
        breaker_failure_threshold=10_000,  # keep the breaker out of it: cost alone decides
        retries=1,
    )
    p.resources["bad"].fail = True
    for _ in range(200):
        await p.execute("m", {})
    # each call is first routed to "bad" at most a few times before its cost says no
    assert p.resources["bad"].calls < 20, p.resources["bad"].calls
