"""The fleet strategy over unequal stand-ins: speed, slots, models in memory, capabilities,
backpressure, and what status() says about it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest

from gleitzeit_jupyter.hub import CircuitState, UserError
from gleitzeit_jupyter.providers.ollama import OllamaConfig, OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

A, B = "alpha:latest", "beta:latest"
TOKENS = 10
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@contextlib.asynccontextmanager
async def pool(*configs: OllamaConfig | str, **kw) -> AsyncIterator[OllamaProvider]:
    kw.setdefault("health_check_interval", 60)
    p = OllamaProvider(hosts=list(configs), auto_discover=False, **kw)
    await p.initialize()
    try:
        yield p
    finally:
        await p.shutdown()


def _unequal_fleet() -> list[OllamaStandIn]:
    """fast / middle / slow: 400, 200, 100 tokens/s per slot; 4, 2, 1 slots; the middle one
    has B on disk only and room for one model."""
    common = {"models": [A, B], "default_tokens": TOKENS, "load_time": 0.5}
    return [
        OllamaStandIn(tokens_per_s=400, num_parallel=4, loaded=[A, B], **common),
        OllamaStandIn(tokens_per_s=200, num_parallel=2, loaded=[A], max_loaded=1, **common),
        OllamaStandIn(tokens_per_s=100, num_parallel=1, loaded=[A, B], **common),
    ]


async def _makespan(strategy: str, calls: int = 120, concurrency: int = 16) -> tuple[float, int]:
    """Seconds for the batch, and cold loads on the server without B in memory."""
    fleet = _unequal_fleet()
    with contextlib.ExitStack() as stack:
        for srv in fleet:
            stack.enter_context(srv)
        configs = [
            OllamaConfig(host=s.url, num_parallel=s.num_parallel) for s in fleet
        ]  # slots as an operator configures them (OLLAMA_NUM_PARALLEL)
        models = [B] * int(calls * 0.3) + [A] * (calls - int(calls * 0.3))
        random.Random(3).shuffle(models)
        sem = asyncio.Semaphore(concurrency)
        async with pool(*configs, strategy=strategy) as p:

            async def one(model: str) -> None:
                async with sem:
                    await p.execute("llm/chat", {"model": model, **CHAT})

            t0 = time.perf_counter()
            await asyncio.gather(*(one(m) for m in models))
            took = time.perf_counter() - t0
        return took, sum(fleet[1].memory.loads.values())


async def test_fleet_finishes_an_unequal_batch_far_sooner_than_least_loaded() -> None:
    # Fluid bound: 120 calls x 10 tokens / (1600 + 400 + 100) tokens/s = 0.57 s.
    # The loads are what decides the makespan here and, unlike seconds on a shared machine,
    # they do not vary with load: least_loaded makes the middle server swap models back and
    # forth, each swap a 0.5 s cold load. How much sooner fleet finishes is bench/fleet.py's.
    fleet_s, fleet_loads = await _makespan("fleet")
    other_s, other_loads = await _makespan("least_loaded")
    assert fleet_loads <= 1  # B is not loaded where it would evict A, which A's calls need
    assert other_loads >= 2, other_loads
    assert fleet_s < other_s, (fleet_s, other_s)


async def test_fleet_loads_a_model_on_a_second_server_when_the_wait_is_longer() -> None:
    # Only `warm` holds the model in memory, with one slot; `cold` can load it in 0.2 s. No
    # load was seen yet, so the estimate assumes 3 s: a queue of 40 calls of 0.1 s on `warm`
    # is longer than that, and `cold` loads the model once (not once per call).
    common = {"models": [A], "default_tokens": TOKENS, "load_time": 0.2}
    with (
        OllamaStandIn(tokens_per_s=100, num_parallel=1, loaded=[A], **common) as warm,
        OllamaStandIn(tokens_per_s=100, num_parallel=1, **common) as cold,
    ):
        configs = [OllamaConfig(host=s.url, num_parallel=1) for s in (warm, cold)]
        async with pool(*configs) as p:
            await p.execute("llm/chat", {"model": A, **CHAT})  # measured once
            await asyncio.gather(*(p.execute("llm/chat", {"model": A, **CHAT}) for _ in range(40)))
        assert cold.memory.loads[A] == 1
        assert len(cold.requests_to("/api/chat")) >= 5


async def test_a_short_queue_stays_on_the_server_with_the_model_in_memory() -> None:
    common = {"models": [A], "default_tokens": TOKENS, "load_time": 2.0}
    with (
        OllamaStandIn(tokens_per_s=1000, num_parallel=2, loaded=[A], **common) as warm,
        OllamaStandIn(tokens_per_s=1000, num_parallel=2, **common) as cold,
    ):
        configs = [OllamaConfig(host=s.url, num_parallel=2) for s in (warm, cold)]
        async with pool(*configs) as p:
            for _ in range(3):
                await asyncio.gather(
                    *(p.execute("llm/chat", {"model": A, **CHAT}) for _ in range(4))
                )
        assert cold.memory.loads[A] == 0 and not cold.requests_to("/api/chat")


async def test_capabilities_decide_where_images_think_and_tools_go() -> None:
    caps_a = {"llava": ["completion", "vision", "thinking"]}
    caps_b = {"llava": ["completion", "tools"]}
    with (
        OllamaStandIn(models=["llava"], capabilities=caps_a) as a,
        OllamaStandIn(models=["llava"], capabilities=caps_b) as b,
    ):
        async with pool(a.url, b.url) as p:
            a_id, b_id = (i.id for i in p.instances)
            image = base64.b64encode(b"\x89PNG fake").decode()
            for _ in range(4):
                r = await p.execute(
                    "llm/generate", {"model": "llava", "prompt": "what?", "images": [image]}
                )
                assert r["instance"] == a_id
                r = await p.execute("llm/chat", {"model": "llava", **CHAT, "think": "low"})
                assert r["instance"] == a_id and r["thinking"]
                tools = [{"type": "function", "function": {"name": "now", "parameters": {}}}]
                r = await p.execute("llm/chat", {"model": "llava", **CHAT, "tools": tools})
                assert r["instance"] == b_id and r["tool_calls"][0]["function"]["name"] == "now"
            both = {"model": "llava", **CHAT, "think": True, "tools": tools}
            with pytest.raises(UserError, match="no Ollama instance can serve") as err:
                await p.execute("llm/chat", both)
            assert f"{a_id}: llava:latest lacks tools" in str(err.value)
            assert f"{b_id}: llava:latest lacks thinking" in str(err.value)
            rows = {r["instance"]: r for r in p.status()["instances"]}
            assert rows[b_id]["skipped"] == "llava:latest lacks thinking"
            assert p.status()["totals"]["routing"].startswith("fleet:")
            assert p.status()["strategy"] == "fleet"


async def test_busy_503_moves_the_call_and_is_no_failure() -> None:
    with OllamaStandIn() as a, OllamaStandIn() as b:
        a.loaded = ["llama3.2"]  # in memory only on A: the first call goes there
        a.faults.busy_rate = 1.0
        async with pool(a.url, b.url, busy_backoff=30, retries=0) as p:
            for _ in range(6):
                r = await p.execute("llm/generate", {"model": "llama3.2", "prompt": "x"})
                assert r["instance"] == p.instances[1].id
            busy = p.instances[0]
            assert busy.breaker_state is CircuitState.CLOSED
            assert busy.breaker.consecutive_failures == 0
            assert p.metrics().set_index("instance").loc[busy.id, "failures"] == 0
            assert p.status()["instances"][0]["skipped"] == "busy (503)"
            assert len(a.requests_to("/api/generate")) == 1  # then kept off for the backoff


async def test_status_shows_what_the_estimate_learned() -> None:
    with OllamaStandIn(tokens_per_s=500, default_tokens=20, load_time=0.1) as srv:
        async with pool(OllamaConfig(host=srv.url, num_parallel=3)) as p:
            await p.execute("llm/generate", {"model": "llama3.2", "prompt": "x"})
            routing = p.status()["instances"][0]["routing"]
    assert routing["slots"] == 3 and routing["loaded"] == ["llama3.2:latest"]
    assert routing["cold_loads"] == 1
    rates = routing["rates"]["llama3.2:latest"]
    assert 300 < rates["tokens_per_s"] < 600 and rates["load_ms"] >= 100


async def test_slots_are_learned_from_calls_that_did_not_wait() -> None:
    with OllamaStandIn(tokens_per_s=200, default_tokens=20, num_parallel=3) as srv:
        async with pool(srv.url) as p:  # num_parallel not configured
            for _ in range(3):
                await asyncio.gather(
                    *(
                        p.execute("llm/generate", {"model": "llama3.2", "prompt": "x"})
                        for _ in range(6)
                    )
                )
            routing = p.status()["instances"][0]["routing"]
    assert routing["slots_learned"] and routing["slots"] == 3  # the 4th call waited for one


async def test_a_lone_busy_server_is_waited_for_not_failed() -> None:
    with OllamaStandIn(num_parallel=1, max_queue=0, tokens_per_s=100, default_tokens=10) as srv:
        async with pool(srv.url, busy_backoff=0.2, retries=0) as p:
            calls = [
                p.execute("llm/generate", {"model": "llama3.2", "prompt": "x"}) for _ in range(4)
            ]
            results = await asyncio.gather(*calls)  # 3 of 4 got 503 at first: none failed
        assert len(results) == 4
        assert len(srv.requests_to("/api/generate")) > 4  # the 503s were asked again


async def test_a_call_that_never_loaded_its_model_leaves_it_cold() -> None:
    # A refused call (503 here) loaded nothing: once the expected load time has passed, the
    # model must still count as cold there, not as if the refused call had loaded it.
    with OllamaStandIn(models=[A, B], loaded=[A], max_loaded=1) as srv:
        async with pool(srv.url, busy_wait=0.0) as p:
            ident = p.instances[0].id
            await p.execute("llm/generate", {"model": A, "prompt": "x"})
            srv.faults.busy_rate = 1.0
            with pytest.raises(Exception, match="busy"):
                await p.execute("llm/generate", {"model": B, "prompt": "x"})
            view = p.fleet.server(ident)
            assert B not in view.loading_until and list(view.loaded) == [A]
            assert p.fleet.cost(ident, 0, B) > p.fleet.cost(ident, 0, A)


async def test_an_unloaded_model_is_no_longer_counted_in_memory() -> None:
    with OllamaStandIn(models=[A], loaded=[A]) as srv:
        async with pool(srv.url) as p:
            ident = p.instances[0].id
            await p.execute("llm/generate", {"model": A, "prompt": "x"})
            r = await p.execute("llm/generate", {"model": A, "keep_alive": 0})
            assert r["done_reason"] == "unload" and not srv.loaded
            assert A not in p.fleet.server(ident).loaded
            assert A not in p.instances[0].handle.loaded


async def test_a_lone_busy_server_is_waited_for_by_streams_too() -> None:
    with OllamaStandIn(num_parallel=1, max_queue=0, tokens_per_s=100, default_tokens=10) as srv:
        async with pool(srv.url, busy_backoff=0.2, retries=0) as p:

            async def stream() -> dict:
                params = {"model": "llama3.2", "prompt": "x"}
                chunks = [c async for c in p.stream("llm/generate", params)]
                return chunks[-1]

            finals = await asyncio.gather(*(stream() for _ in range(4)))
        assert all(f["done"] for f in finals)
        assert len(srv.requests_to("/api/generate")) > 4


async def test_kernels_sharing_servers_do_not_all_herd_onto_the_fastest() -> None:
    # Eight pools (kernels), one call at a time each, over two one-slot servers of 400 and
    # 300 tokens/s: each pool alone sees nothing in flight anywhere. The queue the others
    # make is visible only in Ollama's total_duration (it counts the wait for a slot); without
    # it every pool sends every call to the faster server and the slower one idles.
    common = {"models": [A], "loaded": [A], "num_parallel": 1, "default_tokens": 20}
    with (
        OllamaStandIn(tokens_per_s=400, **common) as fast,
        OllamaStandIn(tokens_per_s=300, **common) as slow,
    ):
        pools = [
            OllamaProvider(
                hosts=[fast.url, slow.url], auto_discover=False, health_check_interval=60
            )
            for _ in range(8)
        ]
        for p in pools:
            await p.initialize()
        try:

            async def kernel(p: OllamaProvider) -> None:
                for _ in range(15):
                    await p.execute("llm/generate", {"model": A, "prompt": "x"})

            await asyncio.gather(*(kernel(p) for p in pools))
        finally:
            for p in pools:
                await p.shutdown()
        on_slow = len(slow.requests_to("/api/generate"))
    # 120 calls; in proportion to speed the slower server takes about 51 of them
    assert on_slow >= 30, on_slow


async def test_a_busy_server_is_waited_for_when_the_others_cannot_take_the_call() -> None:
    # The other server lists the model but without vision: it is no place to go for a call
    # with images, so the only server that can serve it is waited for, not given up on.
    img = base64.b64encode(b"img").decode()
    with (
        OllamaStandIn(
            models=[A],
            capabilities={A: ["completion", "vision"]},
            num_parallel=1,
            max_queue=0,
            tokens_per_s=100,
            default_tokens=10,
        ) as seeing,
        OllamaStandIn(models=[A], capabilities={A: ["completion"]}) as blind,
    ):
        async with pool(seeing.url, blind.url, busy_backoff=0.2, retries=0) as p:
            calls = [
                p.execute("llm/generate", {"model": A, "prompt": "x", "images": [img]})
                for _ in range(4)
            ]
            results = await asyncio.gather(*calls)
        assert len(results) == 4 and not blind.requests_to("/api/generate")
