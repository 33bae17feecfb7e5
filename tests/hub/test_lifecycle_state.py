"""One lifecycle (stopped, starting, running, stopping) with generations: nothing created for
a stopped pool is served, running calls drain then fail clearly, a failed scale-up waits."""

from __future__ import annotations

import asyncio

import pytest
from hub_helpers import QUIET, wait_until

from gleitzeit_jupyter.hub import HubError, NoResourceAvailable
from gleitzeit_jupyter.hub.lifecycle import PoolState
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider


async def test_a_resource_created_while_shutting_down_is_destroyed_never_served():
    p = MemoryProvider(scale_template=MemoryConfig("s", capacity=1), **QUIET)
    await p.initialize()
    p.create_delay = 0.2
    call = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.creating == 1)
    await p.shutdown()
    with pytest.raises(HubError):
        await call
    await asyncio.sleep(0.3)  # the creation ends after the shutdown
    assert p.instances == []
    made = list(p.resources.values())
    assert made and all(r.destroyed for r in made)
    assert all(r.calls == 0 for r in made)
    assert p.state is PoolState.STOPPED


async def test_running_calls_drain_within_the_grace_period():
    p = MemoryProvider([MemoryConfig("a")], **QUIET)
    await p.initialize()
    call = asyncio.create_task(p.execute("m", {"latency": 0.05}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    await p.shutdown(grace=1.0)
    assert (await call)["instance"] == "a"


async def test_calls_still_running_after_the_grace_period_fail_with_a_clear_error():
    p = MemoryProvider([MemoryConfig("a")], **QUIET)
    await p.initialize()
    p.resources["a"].hang = True
    call = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    await p.shutdown(grace=0.05)
    with pytest.raises(NoResourceAvailable, match="shut down while the call ran"):
        await call
    assert p.resources["a"].destroyed


async def test_a_call_waiting_for_a_scale_up_at_the_end_of_the_grace_fails_with_a_clear_error():
    p = MemoryProvider(
        [MemoryConfig("a", capacity=1)], scale_template=MemoryConfig("s", capacity=1), **QUIET
    )
    await p.initialize()
    p.resources["a"].hang = True
    busy = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    p.create_delay = 5.0
    growing = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.creating == 1)
    await p.shutdown(grace=0.05)
    for call in (busy, growing):
        with pytest.raises(NoResourceAvailable, match="shut down while the call ran"):
            await call


async def test_a_task_whose_call_shutdown_aborted_can_still_be_cancelled_later():
    p = MemoryProvider(
        [MemoryConfig("a", capacity=1)], scale_template=MemoryConfig("s", capacity=1), **QUIET
    )
    await p.initialize()
    p.resources["a"].hang = True
    busy = asyncio.create_task(p.execute("m", {}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    p.create_delay = 5.0
    second_call_started = asyncio.Event()
    stopped = asyncio.Event()

    async def cell() -> str:
        with pytest.raises(HubError):
            await p.execute("m", {})  # waits for a scale-up; shutdown aborts it
        await stopped.wait()
        p.create_delay = 0.0
        p.resources["a"].hang = False
        await p.initialize()
        second_call_started.set()
        await p.execute("m", {"latency": 5.0})
        return "finished"

    task = asyncio.create_task(cell())
    await wait_until(lambda: p.creating == 1)
    await p.shutdown(grace=0.05)
    stopped.set()
    await asyncio.wait_for(second_call_started.wait(), 2.0)
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    task.cancel()  # the user's own interrupt: a cancellation, not a shutdown error
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.gather(busy, return_exceptions=True)
    await p.shutdown(0)


async def test_a_failed_scale_up_waits_for_the_busy_instance():
    p = MemoryProvider(
        [MemoryConfig("a", capacity=1)], scale_template=MemoryConfig("s", capacity=1), **QUIET
    )
    await p.initialize()
    p.create_fails = True
    first = asyncio.create_task(p.execute("m", {"latency": 0.05}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    second = await p.execute("m", {})  # scale-up fails; a frees up a moment later
    assert second["instance"] == "a"
    await first
    await p.shutdown()


async def test_a_pool_restarts_after_shutdown_with_a_new_generation():
    p = MemoryProvider([MemoryConfig("a")], **QUIET)
    await p.initialize()
    gen = p.lifecycle.generation
    await p.shutdown()
    await p.initialize()
    assert p.lifecycle.generation == gen + 1 and p.state is PoolState.RUNNING
    assert (await p.execute("m", {}))["instance"] == "a"
    await p.shutdown()
