"""OpenAIProvider keeps the hub's promise: a server killed with calls in flight loses none."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from gleitzeit_jupyter.hub import ResourceStatus
from gleitzeit_jupyter.providers.openai import OpenAIProvider
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


@pytest.fixture
def trio() -> Iterator[list[OpenAIStandIn]]:
    # 2 s before the first token: every call is still running when the victim dies, even
    # when starting the 150 takes a while on a loaded machine.
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(OpenAIStandIn(latency=2.0, num_parallel=64, seed=i))
            for i in range(3)
        ]


async def _until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True])
async def test_server_killed_with_150_calls_in_flight_loses_none(
    trio: list[OpenAIStandIn], streaming: bool
) -> None:
    victim = trio[1]
    async with OpenAIProvider(
        hosts=[s.url for s in trio],
        strategy="round_robin",  # a share of the 150 on every server, the victim's included
        health_check_interval=0.2,
        breaker_recovery_timeout=0.5,
    ) as p:
        vid = p.instances[1].id

        async def one() -> dict:
            if not streaming:
                return await p.execute("llm/generate", GEN)
            chunks = [c async for c in p.stream("llm/generate", GEN)]
            assert chunks[-1]["done"]
            return chunks[-1]

        tasks = [asyncio.ensure_future(one()) for _ in range(150)]
        await _until(lambda: sum(i.in_flight for i in p.instances) == 150)
        on_victim = p.instances[1].in_flight
        assert on_victim > 0
        victim.down()  # RST on every call it holds, refused connections after
        results = await asyncio.gather(*tasks)
        assert len(results) == 150 and all(r["response"] for r in results)
        served = Counter(r["instance"] for r in results)
        assert served[vid] == 0  # every call it held was answered by the other two
        assert sum(served.values()) == 150
        await _until(lambda: p.instances[1].status is ResourceStatus.UNHEALTHY)
        victim.up()
        await _until(
            lambda: p.instances[1].status in (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
        )
