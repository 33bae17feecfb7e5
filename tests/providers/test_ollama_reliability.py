"""The reliability promises of issue 3, each against real stand-in servers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from gleitzeit_jupyter.hub import CircuitState, HubEvent, ResourceStatus
from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


@pytest.fixture
def trio() -> Iterator[list[OllamaStandIn]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(OllamaStandIn(latency=0.01, num_parallel=4, seed=i))
            for i in range(3)
        ]


async def _batch(
    p: OllamaProvider, n: int, concurrency: int, params: dict, on_done=None
) -> list[dict]:
    sem = asyncio.Semaphore(concurrency)
    out: list[dict] = []

    async def one() -> None:
        async with sem:
            r = await p.execute("llm/generate", params)
            out.append(r)
            if on_done is not None:
                on_done(len(out))

    await asyncio.gather(*(one() for _ in range(n)))
    return out


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_instance_killed_mid_batch(trio: list[OllamaStandIn]) -> None:
    victim = trio[1]
    p = OllamaProvider(
        hosts=[s.url for s in trio],
        auto_discover=False,
        health_check_interval=0.2,
        breaker_recovery_timeout=0.5,
    )
    breaker_events: list[HubEvent] = []
    async with p:
        vid = p.instances[1].id
        p.subscribe(lambda e: breaker_events.append(e) if e.kind == "breaker" else None)

        def kill_at_150(done: int) -> None:
            if done == 150:
                victim.down()  # RST on its in-flight calls, refused connects after

        results = await _batch(p, 500, 32, GEN, on_done=kill_at_150)
        assert len(results) == 500 and all(r["response"] for r in results)
        served = Counter(r["instance"] for r in results)
        assert 0 < served[vid] < 500 / 3  # it served until it died
        assert any(e.instance_id == vid and e.new is CircuitState.OPEN for e in breaker_events)
        await _until(lambda: p.instances[1].status is ResourceStatus.UNHEALTHY)

        victim.up()  # restarted: health checks and a half-open trial bring it back
        # (DEGRADED counts: its recent success rate still remembers the failures)
        await _until(
            lambda: p.instances[1].status in (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
        )
        # trials that failed during the outage lengthened the breaker's wait (backoff)
        await _until(lambda: p.instances[1].breaker_state is not CircuitState.OPEN, 30)
        again = await _batch(p, 60, 8, GEN)
        assert Counter(r["instance"] for r in again)[vid] > 0
        assert p.instances[1].breaker_state is CircuitState.CLOSED


async def test_busy_half_the_time_loses_no_call_and_gets_less_traffic(
    trio: list[OllamaStandIn],
) -> None:
    busy = trio[0]
    busy.faults.busy_rate = 0.5
    async with OllamaProvider(
        hosts=[s.url for s in trio], auto_discover=False, health_check_interval=60, busy_backoff=0.2
    ) as p:
        results = await _batch(p, 300, 16, GEN)
        assert len(results) == 300  # every call succeeded (the 503s were retried elsewhere)
        share = Counter(r["instance"] for r in results)[p.instances[0].id] / 300
        assert share < 0.2, share  # a fair share would be 1/3
        assert len(busy.requests_to("/api/generate")) > 10  # it was still tried, and 503'd


async def test_model_only_on_b_goes_to_b(trio: list[OllamaStandIn]) -> None:
    a, b, c = trio
    b.models = ["llama3.2", "phi3:mini"]
    async with OllamaProvider(
        hosts=[s.url for s in trio],
        auto_discover=False,
        health_check_interval=60,
        strategy="round_robin",
    ) as p:
        rs = await _batch(p, 50, 8, {"model": "phi3:mini", "prompt": "x"})
        assert {r["instance"] for r in rs} == {p.instances[1].id}
        assert a.requests_to("/api/generate") == c.requests_to("/api/generate") == []
        # the common model: one call at a time stays where it is loaded (no cold loads)...
        rs = await _batch(p, 10, 1, GEN)
        assert len({r["instance"] for r in rs}) == 1
        # ...but once that instance's parallel slots are full, the others take calls too
        rs = await _batch(p, 60, 24, GEN)
        assert len({r["instance"] for r in rs}) == 3


@pytest.mark.parametrize("streaming", [True, False])
async def test_interrupt_leaves_no_connection_and_no_task(streaming: bool) -> None:
    with OllamaStandIn(
        tokens_per_s=20, default_tokens=400, latency=0.0 if streaming else 2.0
    ) as srv:
        async with OllamaProvider(
            hosts=[srv.url], auto_discover=False, health_check_interval=60
        ) as p:
            tasks_before = asyncio.all_tasks()
            conns_before = srv.open_connections
            started = asyncio.Event()

            async def call() -> None:
                if streaming:
                    async for _ in p.stream("llm/generate", GEN):
                        started.set()
                else:
                    started.set()
                    await p.execute("llm/generate", GEN)

            task = asyncio.create_task(call())
            await asyncio.wait_for(started.wait(), 5)
            await _until(lambda: srv.active == 1, 5)  # the server is generating for us
            t0 = time.monotonic()
            task.cancel()  # what a notebook interrupt does
            with pytest.raises(asyncio.CancelledError):
                await task
            await _until(lambda: len(srv.disconnects) == 1 and srv.active == 0, 1.0)
            # at once: the answer would have taken 20 s (with generous slack for a busy box)
            assert time.monotonic() - t0 < 1.0
            assert srv.disconnects[0].path == "/api/generate"
            await _until(lambda: srv.open_connections <= conns_before, 1.0)
            pool = p.instances[0].handle.client._transport._pool
            assert [c for c in pool.connections if not c.is_idle()] == []
            await asyncio.sleep(0.05)
            assert asyncio.all_tasks() - tasks_before == set()  # nothing left running
            assert p.instances[0].in_flight == 0
            assert p.instances[0].breaker.consecutive_failures == 0  # not the server's fault


async def test_consumer_leaving_a_stream_early_closes_it() -> None:
    with OllamaStandIn(tokens_per_s=20, default_tokens=400) as srv:
        async with OllamaProvider(
            hosts=[srv.url], auto_discover=False, health_check_interval=60
        ) as p:
            async with contextlib.aclosing(p.stream("llm/generate", GEN)) as chunks:
                async for chunk in chunks:
                    assert chunk["done"] is False
                    break  # the reader has seen enough
            await _until(lambda: len(srv.disconnects) == 1 and srv.active == 0, 1.0)
            assert p.instances[0].in_flight == 0
            pool = p.instances[0].handle.client._transport._pool
            assert [c for c in pool.connections if not c.is_idle()] == []
