"""One deadline per call: queue wait, every attempt and the whole stream together."""

from __future__ import annotations

import asyncio
import time

import pytest
from hub_helpers import wait_until

from gleitzeit_jupyter.hub import CircuitState, ExecutionTimeout, UserError
from gleitzeit_jupyter.testing.memory import MemoryConfig


async def test_timeout_bounds_the_whole_call_across_hanging_instances(pool):
    p = await pool(["a", "b", "c"], retries=2)
    for r in p.resources.values():
        r.hang = True
    t0 = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        await p.execute("m", {}, timeout=0.3)
    assert time.monotonic() - t0 < 0.45


async def test_queue_wait_and_attempt_share_one_deadline(pool):
    p = await pool([MemoryConfig("a", capacity=1)])
    gate = asyncio.Event()
    busy = asyncio.create_task(p.execute("m", {"until": gate}))
    await wait_until(lambda: p.get_instance("a").in_flight == 1)
    asyncio.get_running_loop().call_later(0.2, gate.set)
    t0 = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        # waits 0.2 s for the slot, then the attempt itself would take 0.5 s
        await p.execute("m", {"latency": 0.5}, timeout=0.3)
    assert time.monotonic() - t0 < 0.45
    await busy


async def test_call_timeout_is_the_default_deadline(pool):
    p = await pool(["a", "b"], call_timeout=0.2)
    for r in p.resources.values():
        r.hang = True
    t0 = time.monotonic()
    with pytest.raises(ExecutionTimeout, match="deadline"):
        await p.execute("m", {})
    assert time.monotonic() - t0 < 0.35


async def test_timeout_bounds_the_whole_stream_not_only_its_first_chunk(pool):
    p = await pool(["a"])
    t0 = time.monotonic()
    with pytest.raises(ExecutionTimeout):
        async for _ in p.stream("m", {"chunks": 20, "latency": 0.05}, timeout=0.3):
            pass
    assert time.monotonic() - t0 < 0.45


async def test_first_token_timeout_bounds_the_first_chunk_of_each_attempt(pool):
    p = await pool(["a", "b"], retries=1)
    t0 = time.monotonic()
    with pytest.raises(ExecutionTimeout, match="no first token"):
        async for _ in p.stream("m", {"chunks": 2, "latency": 1.0}, first_token_timeout=0.1):
            pass
    assert time.monotonic() - t0 < 0.5  # two attempts of 0.1 s, not two of 1 s
    assert sum(r.stream_calls for r in p.resources.values()) == 2


@pytest.mark.parametrize("value", [0, -1, float("nan"), "1"])
async def test_a_bad_timeout_is_a_user_error_and_no_instance_is_called(pool, value):
    p = await pool(["a"])
    with pytest.raises(UserError, match="timeout"):
        await p.execute("m", {}, timeout=value)
    assert p.resources["a"].calls == 0


@pytest.mark.parametrize("value", [0, -1, "x"])
async def test_a_bad_first_token_timeout_is_a_user_error_that_trips_no_breaker(pool, value):
    p = await pool(["a"], breaker_failure_threshold=1)
    with pytest.raises(UserError, match="first_token_timeout"):
        async for _ in p.stream("m", {}, first_token_timeout=value):
            pass
    inst = p.get_instance("a")
    assert inst.breaker_state is CircuitState.CLOSED and inst.metrics.failures == 0
    assert p.resources["a"].stream_calls == 0
