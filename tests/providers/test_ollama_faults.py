"""Ollama pool under faults, against real stand-in servers: a server killed under load loses
no call, caller values never trip breakers, a busy server is not ejected as dead."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from gleitzeit_jupyter.hub import CircuitState, ResourceFailed, ResourceStatus, UserError
from gleitzeit_jupyter.providers import _ollama_wire as wire
from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


async def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)


@pytest.fixture
def trio() -> Iterator[list[OllamaStandIn]]:
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(OllamaStandIn(latency=0.05, num_parallel=8, seed=i))
            for i in range(3)
        ]


@pytest.mark.parametrize("run", range(3))
async def test_300_concurrent_calls_lose_nothing_when_one_of_three_servers_is_killed(
    trio: list[OllamaStandIn], run: int
) -> None:
    p = OllamaProvider(hosts=[s.url for s in trio], auto_discover=False, health_check_interval=60)
    async with p:
        calls = [asyncio.create_task(p.execute("llm/generate", GEN)) for _ in range(300)]
        victim = p.instances[1]
        await _until(lambda: victim.in_flight >= 20)  # it dies with requests in flight
        await asyncio.to_thread(trio[1].down)  # RST on open connections, refused after
        results = await asyncio.gather(*calls, return_exceptions=True)
        lost = [r for r in results if isinstance(r, BaseException)]
        assert lost == [], f"{len(lost)} lost, e.g. {lost[0]!r}"
        # the refused connections showed it down at once (passive health), not after
        # three health intervals of 60 s
        assert victim.status is ResourceStatus.UNHEALTHY


def test_connect_errors_never_started_read_errors_may_have():
    refused = wire.transport_error(httpx.ConnectError("refused"), "i", "http://x", 1.0)
    assert isinstance(refused, ResourceFailed) and refused.started is False
    timeout = wire.transport_error(httpx.ConnectTimeout("slow"), "i", "http://x", 1.0)
    assert isinstance(timeout, ResourceFailed) and timeout.started is False
    for exc in (httpx.ReadError("reset"), httpx.RemoteProtocolError("closed")):
        failure = wire.transport_error(exc, "i", "http://x", 1.0)
        assert isinstance(failure, ResourceFailed) and failure.started is True


async def test_numpy_values_are_sent_as_plain_json(trio: list[OllamaStandIn]) -> None:
    async with OllamaProvider(hosts=[trio[0].url], auto_discover=False) as p:
        r = await p.execute(
            "llm/generate",
            {**GEN, "seed": np.int64(7), "temperature": np.float32(0.5), "stop": np.array(["x"])},
        )
        assert r["response"]
        sent = trio[0].requests_to("/api/generate")[-1].body["options"]
        assert sent["seed"] == 7 and sent["stop"] == ["x"]
        assert sent["temperature"] == pytest.approx(0.5)


async def test_a_value_that_cannot_be_sent_is_a_user_error_and_trips_no_breaker(
    trio: list[OllamaStandIn],
) -> None:
    async with OllamaProvider(
        hosts=[s.url for s in trio], auto_discover=False, breaker_failure_threshold=2
    ) as p:
        for _ in range(5):
            with pytest.raises(UserError, match="'seed'"):
                await p.execute("llm/generate", {**GEN, "seed": object()})
        assert all(i.breaker_state is CircuitState.CLOSED for i in p.instances)
        assert all(i.metrics.failures == 0 for i in p.instances)
        assert sum(len(s.requests_to("/api/generate")) for s in trio) == 0


@pytest.mark.parametrize(
    "value", [float("nan"), np.float64("nan"), float("inf"), np.float32("-inf")]
)
async def test_a_non_finite_number_is_a_user_error_naming_it_and_nothing_is_sent(
    trio: list[OllamaStandIn], value: float
) -> None:
    # JSON has no NaN or Infinity: sending the bare tokens is a body Ollama cannot parse
    async with OllamaProvider(hosts=[trio[0].url], auto_discover=False) as p:
        with pytest.raises(UserError, match="'temperature'"):
            await p.execute("llm/generate", {**GEN, "temperature": value})
        with pytest.raises(UserError, match="'options'"):
            await p.execute("llm/generate", {**GEN, "options": {"top_p": value}})
        assert trio[0].requests_to("/api/generate") == []
        assert p.instances[0].metrics.failures == 0


async def test_a_busy_server_is_not_ejected_by_health_checks() -> None:
    with OllamaStandIn(latency=1.0, num_parallel=64) as srv:
        from gleitzeit_jupyter.providers.ollama import OllamaConfig

        p = OllamaProvider(
            hosts=[OllamaConfig(host=srv.url, max_connections=4)],
            auto_discover=False,
            health_check_interval=60,
            health_check_timeout=0.3,
        )
        async with p:
            calls = [asyncio.create_task(p.execute("llm/generate", GEN)) for _ in range(12)]
            await asyncio.sleep(0.1)  # every call connection is taken
            for _ in range(3):
                await p.check_health_now()
            assert p.instances[0].status is ResourceStatus.HEALTHY
            assert p.health_error(p.instances[0].id) is None
            await asyncio.gather(*calls)
