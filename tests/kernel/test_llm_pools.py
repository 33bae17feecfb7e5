"""The router over the LLM pools: a model in both pools is spread by expected finish time,
and a pool that goes away mid-batch loses no call (the other pool takes them)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from gleitzeit_jupyter.hub import ResourceFailed, UserError
from gleitzeit_jupyter.kernel.llm_pools import LlmRouter
from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.providers.openai import OpenAIProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


@pytest.fixture
async def router() -> AsyncIterator[tuple[LlmRouter, OpenAIStandIn]]:
    with (
        OllamaStandIn(models=["llama3.2"], latency=0.05, num_parallel=4) as o,
        OpenAIStandIn(models=["llama3.2", "qwen"], latency=0.05, num_parallel=4) as v,
    ):
        async with (
            OllamaProvider(hosts=[o.url], auto_discover=False, health_check_interval=0.2) as op,
            OpenAIProvider(hosts=[v.url], health_check_interval=0.2) as vp,
        ):
            yield LlmRouter({"ollama": op, "openai": vp}), v


async def _batch(r: LlmRouter, n: int, concurrency: int, on_done=None) -> list[dict]:
    sem = asyncio.Semaphore(concurrency)
    out: list[dict] = []

    async def one() -> None:
        async with sem:
            out.append(await r.execute("llm/generate", GEN))
            if on_done is not None:
                on_done(len(out))

    await asyncio.gather(*(one() for _ in range(n)))
    return out


async def test_a_model_in_both_pools_is_spread_over_both(router) -> None:
    r, _ = router
    rs = await _batch(r, 40, 12)
    pools = Counter(x["pool"] for x in rs)
    assert pools["ollama"] > 0 and pools["openai"] > 0 and sum(pools.values()) == 40


async def test_a_model_in_one_pool_goes_there_and_prefix_pins(router) -> None:
    r, _ = router
    res = await r.execute("llm/generate", {"model": "qwen", "prompt": "x"})
    assert res["pool"] == "openai"
    res = await r.execute("llm/generate", {"model": "ollama:llama3.2", "prompt": "x"})
    assert res["pool"] == "ollama"
    chunks = [
        c async for c in r.stream("llm/generate", {"model": "openai:llama3.2", "prompt": "x"})
    ]
    assert chunks[-1]["done"] and {c["pool"] for c in chunks} == {"openai"}


async def test_a_pool_that_dies_mid_batch_loses_no_call(router) -> None:
    r, v = router

    def kill(done: int) -> None:
        if done == 20:
            v.down()  # the OpenAI pool's only server: its calls in flight must go to Ollama

    rs = await _batch(r, 100, 16, on_done=kill)
    assert len(rs) == 100 and all(x["response"] for x in rs)
    assert Counter(x["pool"] for x in rs)["ollama"] > 50


async def test_a_model_in_no_pool_is_one_error_naming_both(router) -> None:
    r, _ = router
    with pytest.raises(UserError) as info:
        await r.execute("llm/generate", {"model": "nope", "prompt": "x"})
    text = str(info.value)
    assert text.startswith("no pool can serve this call (ollama: ")
    assert "openai: model 'nope' is not served" in text


async def test_models_of_both_pools_each_with_its_pool(router) -> None:
    r, _ = router
    res = await r.execute("llm/models")
    assert sorted((m["name"], m["pool"]) for m in res["models"]) == [
        ("llama3.2", "openai"),
        ("llama3.2:latest", "ollama"),
        ("qwen", "openai"),
    ]


async def test_a_rate_limiting_pool_sends_calls_to_the_other_pool_at_once() -> None:
    # The OpenAI pool is faster, so a batch starts there; when its server answers 429 the
    # calls must go to the Ollama pool rather than wait out Retry-After and ask again.
    with (
        OllamaStandIn(models=["llama3.2"], latency=0.1, num_parallel=8) as o,
        OpenAIStandIn(models=["llama3.2"], latency=0.0, num_parallel=8) as v,
    ):
        async with (
            OllamaProvider(hosts=[o.url], auto_discover=False) as op,
            OpenAIProvider(hosts=[v.url], busy_wait=6.0) as vp,
        ):
            r = LlmRouter({"ollama": op, "openai": vp})
            await _batch(r, 8, 8)  # both pools learn their speeds
            v.faults.update(rate_limit_rate=1.0, retry_after=0.5)
            asked = len(v.requests_to("/v1/chat/completions"))
            rs = await _batch(r, 8, 8)
            assert [x["pool"] for x in rs] == ["ollama"] * 8
            assert len(v.requests_to("/v1/chat/completions")) - asked <= 8


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_pool_set_to_never_retry_a_started_call_keeps_it_out_of_the_other_pool(
    streamed: bool,
) -> None:
    # retries=0 asks for at most once: a call that reached a server and failed there must
    # not be run again, in that pool or the other one.
    with OllamaStandIn(models=["llama3.2"]) as o, OpenAIStandIn(models=["llama3.2"]) as v:
        v.faults.update(error_rate=1.0, error_status=500)
        async with (
            OllamaProvider(hosts=[o.url], auto_discover=False) as op,
            OpenAIProvider(hosts=[v.url], retries=0) as vp,
        ):
            r = LlmRouter({"openai": vp, "ollama": op})  # first on a tie: the OpenAI pool
            failed = 0
            for _ in range(6):
                try:
                    if streamed:
                        [c async for c in r.stream("llm/generate", GEN)]
                    else:
                        await r.execute("llm/generate", GEN)
                except ResourceFailed:
                    failed += 1
            # every call that reached the failing server failed; none was run again
            assert failed >= 1 and len(v.requests_to("/v1/chat/completions")) == failed


async def test_a_429_waits_in_its_pool_when_the_other_pool_is_down() -> None:
    # The other pool lists the model but has no live server: turning the call away would
    # fail it, while the rate-limited server answers after its Retry-After.
    with OllamaStandIn(models=["llama3.2"]) as o, OpenAIStandIn(models=["llama3.2"]) as v:
        async with (
            OllamaProvider(hosts=[o.url], auto_discover=False, health_check_interval=0.1) as op,
            OpenAIProvider(hosts=[v.url], health_check_interval=60) as vp,
        ):
            o.down()
            while any(i.status.value in ("healthy", "degraded") for i in op.instances):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            v.faults.update(rate_limit_rate=1.0, retry_after=0.3)
            r = LlmRouter({"ollama": op, "openai": vp})
            call = asyncio.ensure_future(r.execute("llm/generate", GEN))
            while not v.requests_to("/v1/chat/completions"):  # noqa: ASYNC110 - another thread's
                await asyncio.sleep(0.01)
            v.faults.update(rate_limit_rate=0.0)
            assert (await call)["pool"] == "openai"
