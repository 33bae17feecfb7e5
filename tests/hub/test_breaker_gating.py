"""Breakers gate every route, also when no instance is healthy (panic routing)."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import res, wait_until

from gleitzeit_jupyter.hub import CircuitState, HubError, NoResourceAvailable, ResourceStatus


async def test_an_open_breaker_admits_nothing_before_its_recovery_timeout_in_panic(pool):
    p = await pool(["a", "b"], breaker_failure_threshold=1, breaker_recovery_timeout=30.0)
    for name in ("a", "b"):
        res(p, name).alive = False
    with pytest.raises(HubError):
        await p.execute("m", {})
    for name in ("a", "b"):
        p.get_instance(name).status = ResourceStatus.UNHEALTHY  # every instance ejected
        assert p.get_instance(name).breaker_state is CircuitState.OPEN
        res(p, name).alive = True
    calls_before = sum(r.calls for r in p.resources.values())
    for _ in range(5):
        with pytest.raises(NoResourceAvailable, match="next trial in"):
            await p.execute("m", {})
    assert sum(r.calls for r in p.resources.values()) == calls_before


async def test_half_open_admits_at_most_its_trials_also_in_panic(pool):
    p = await pool(
        ["a"], breaker_failure_threshold=1, breaker_recovery_timeout=0.05, breaker_half_open_max=1
    )
    res(p, "a").alive = False
    with pytest.raises(HubError):
        await p.execute("m", {})
    p.get_instance("a").status = ResourceStatus.UNHEALTHY
    res(p, "a").alive = True
    await asyncio.sleep(0.08)
    assert p.get_instance("a").breaker_state is CircuitState.HALF_OPEN
    gate = asyncio.Event()
    calls = [asyncio.create_task(p.execute("m", {"until": gate})) for _ in range(5)]
    await wait_until(lambda: res(p, "a").active >= 1)
    await asyncio.sleep(0.02)
    assert res(p, "a").max_active == 1  # one trial; the others wait for its outcome
    gate.set()
    await asyncio.gather(*calls)
    assert p.get_instance("a").breaker_state is CircuitState.CLOSED


async def test_a_single_dead_server_fails_fast_with_the_time_to_the_next_trial(pool):
    p = await pool(["only"], breaker_failure_threshold=2, breaker_recovery_timeout=5.0)
    res(p, "only").alive = False
    for _ in range(2):
        with pytest.raises(HubError):
            await p.execute("m", {})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(NoResourceAvailable) as info:
        await p.execute("m", {}, timeout=3.0)
    assert loop.time() - t0 < 0.1
    assert "next trial in" in str(info.value)
    assert res(p, "only").calls == 2


async def test_a_waiter_handed_a_slot_does_not_run_if_the_breaker_opened_before_it_started(pool):
    from gleitzeit_jupyter.testing.memory import MemoryConfig

    p = await pool([MemoryConfig("a", capacity=1)], breaker_recovery_timeout=30.0)
    free = asyncio.Event()
    holder = asyncio.create_task(p.execute("m", {"until": free}))
    await wait_until(lambda: res(p, "a").active == 1)
    waiter = asyncio.create_task(p.execute("m", {"value": "w"}))
    await wait_until(lambda: p.queue_length == 1)
    free.set()
    await asyncio.sleep(0)  # the holder finishes and hands its slot to the waiter ...
    assert p.queue_length == 0 and not waiter.done()
    p.get_instance("a").breaker.trip()  # ... and the breaker opens before the waiter runs
    with pytest.raises(NoResourceAvailable, match="next trial in"):
        await waiter
    await holder
    assert res(p, "a").calls == 1  # the open breaker admitted nothing
    assert p.get_instance("a").in_flight == 0


async def test_trials_handed_out_do_not_run_once_another_trial_reopened_the_breaker(pool):
    from gleitzeit_jupyter.testing.memory import MemoryConfig

    p = await pool(
        [MemoryConfig("a"), MemoryConfig("b", capacity=1)],
        breaker_failure_threshold=1,
        breaker_recovery_timeout=0.05,
        breaker_half_open_max=2,
    )
    a = p.get_instance("a")
    a.breaker.trip()
    free = asyncio.Event()
    holder = asyncio.create_task(p.execute("m", {"until": free}, instance="b"))
    await wait_until(lambda: res(p, "b").active == 1)
    waiters = [asyncio.create_task(p.execute("m", {})) for _ in range(2)]
    await wait_until(lambda: p.queue_length == 2)
    await asyncio.sleep(0.06)
    p.enable("a")  # a dispatch: a is half-open now and hands both waiters a trial slot ...
    assert p.queue_length == 0 and a.breaker.trials == 2
    a.breaker.record_failure(trial=False)  # ... and a failure re-opens it before they start
    assert a.breaker_state is CircuitState.OPEN
    await asyncio.sleep(0.01)
    assert res(p, "a").calls == 0  # the open breaker admitted nothing
    free.set()
    results = await asyncio.gather(*waiters)
    assert {r["instance"] for r in results} == {"b"}
    await holder
    assert a.breaker.trials == 0 and a.in_flight == 0
