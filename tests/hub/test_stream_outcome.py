"""A stream read to its final chunk is a success, even if the consumer stops right after it."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

from hub_helpers import res

from gleitzeit_jupyter.hub import CircuitState


async def _read_until_done(p, **kw) -> list[dict]:
    got = []
    async with aclosing(p.stream("m", {"chunks": 3, "final": True}, **kw)) as chunks:
        async for chunk in chunks:
            got.append(chunk)
            if chunk.get("done"):
                break  # a consumer that stops at done: true, as the Ollama one does
    return got


async def test_stopping_after_the_final_chunk_counts_as_success(pool):
    p = await pool(["a"])
    got = await _read_until_done(p)
    assert got[-1]["done"] is True
    m = p.get_instance("a").metrics
    assert (m.successes, m.failures) == (1, 0)
    assert m.summary().p50_ms is not None  # a latency sample was taken


async def test_a_half_open_trial_read_to_its_final_chunk_closes_the_breaker(pool):
    p = await pool(["a"], breaker_failure_threshold=1, breaker_recovery_timeout=0.05)
    res(p, "a").alive = False
    try:
        await p.execute("m", {})
    except Exception:
        pass
    res(p, "a").alive = True
    await asyncio.sleep(0.08)
    assert p.get_instance("a").breaker_state is CircuitState.HALF_OPEN
    await _read_until_done(p)
    assert p.get_instance("a").breaker_state is CircuitState.CLOSED


async def test_stopping_before_the_final_chunk_counts_as_nothing(pool):
    p = await pool(["a"])
    async with aclosing(p.stream("m", {"chunks": 5, "final": True})) as chunks:
        async for _ in chunks:
            break
    m = p.get_instance("a").metrics
    assert (m.successes, m.failures) == (0, 0)
    assert p.get_instance("a").in_flight == 0
