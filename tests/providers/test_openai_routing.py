"""Where OpenAIProvider sends calls: by the models each server lists, away from a queue the
engine reports on /metrics, and what it shows about that in status()."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

import pytest

from gleitzeit_jupyter.providers._openai_wire import error_code, error_message, queue_depth
from gleitzeit_jupyter.providers.openai import OpenAIProvider
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

GEN = {"model": "llama3.2", "prompt": "hello"}


@pytest.fixture
def pair() -> Iterator[list[OpenAIStandIn]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(OpenAIStandIn(seed=i, tokens_per_s=400)) for i in range(2)]


async def test_a_model_on_one_server_goes_only_there(pair: list[OpenAIStandIn]) -> None:
    pair[1].models = ["llama3.2", "Qwen/Qwen2.5-7B-Instruct"]
    async with OpenAIProvider(hosts=[s.url for s in pair], strategy="round_robin") as p:
        params = {"model": "Qwen/Qwen2.5-7B-Instruct", "prompt": "x"}
        rs = await asyncio.gather(*(p.execute("llm/generate", params) for _ in range(12)))
        assert {r["instance"] for r in rs} == {p.instances[1].id}
        rs = await asyncio.gather(*(p.execute("llm/generate", GEN) for _ in range(12)))
        assert {r["instance"] for r in rs} == {p.instances[0].id, p.instances[1].id}


async def test_ollama_latest_tag_matches_a_server_listing_the_bare_name() -> None:
    with OpenAIStandIn(models=["llama3.2:latest"]) as srv:
        async with OpenAIProvider(hosts=[srv.url]) as p:
            r = await p.execute("llm/generate", GEN)
    assert r["response"]
    assert srv.requests_to("/v1/chat/completions")[-1].body["model"] == "llama3.2:latest"


async def test_a_queue_reported_on_metrics_steers_calls_away(pair: list[OpenAIStandIn]) -> None:
    pair[0].faults.update(extra_waiting=200)  # other clients queue there
    async with OpenAIProvider(hosts=[s.url for s in pair], health_check_interval=60) as p:
        await p.check_health_now()
        queue = p.status()["instances"][0]["queue"]
        assert queue == {"engine": "vllm", "running": 0.0, "waiting": 200.0}
        rs = [await p.execute("llm/generate", GEN) for _ in range(10)]
        assert Counter(r["instance"] for r in rs)[p.instances[0].id] == 0
        pair[0].faults.update(extra_waiting=0)
        pair[1].faults.update(extra_waiting=200)
        await p.check_health_now()
        rs = [await p.execute("llm/generate", GEN) for _ in range(10)]
        assert Counter(r["instance"] for r in rs)[p.instances[1].id] == 0


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llama.cpp", "tgi"])
async def test_each_engines_queue_gauges_are_read(engine: str) -> None:
    with OpenAIStandIn(engine=engine) as srv:
        srv.faults.update(extra_waiting=3)
        async with OpenAIProvider(hosts=[srv.url], health_check_interval=60) as p:
            await p.check_health_now()
            assert p.status()["instances"][0]["queue"]["engine"] == engine
            assert p.status()["instances"][0]["queue"]["waiting"] == 3.0
            r = await p.execute("llm/generate", GEN)  # TGI: its model read from /info
            assert r["response"]


async def test_no_metrics_and_no_health_still_healthy_and_routed() -> None:
    with OpenAIStandIn(engine=None, has_health=False) as srv:
        async with OpenAIProvider(hosts=[srv.url], health_check_interval=0.1) as p:
            await p.check_health_now()
            await p.check_health_now()
            r = await p.execute("llm/generate", GEN)
            snap = p.status()["instances"][0]
    assert r["response"] and snap["status"] == "healthy" and snap["queue"] is None
    # asked once each, then left alone: the engine has neither
    assert len(srv.requests_to("/metrics")) == 1 and len(srv.requests_to("/health")) == 1


def test_metrics_parser_sums_label_sets_and_rejects_garbage() -> None:
    text = (
        "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a"} 2.0\n'
        'vllm:num_requests_running{model_name="b"} 1.0\n'
        'vllm:num_requests_waiting{model_name="a",engine="0"} 4.0 1712345678\n'
        "vllm:gpu_cache_usage_perc 0.5\n"
    )
    assert queue_depth(text) == ("vllm", 3.0, 4.0)
    assert queue_depth("process_cpu_seconds_total 12.0\n") is None
    with pytest.raises(ValueError):
        queue_depth('vllm:num_requests_waiting{model_name="a"} NaN\nvllm:num_requests_running 1')
    with pytest.raises(ValueError):
        queue_depth("vllm:num_requests_waiting{broken 1\n")


async def test_status_shows_tokens_per_s_and_routing(pair: list[OpenAIStandIn]) -> None:
    async with OpenAIProvider(hosts=[s.url for s in pair]) as p:
        for _ in range(3):
            await p.execute("llm/generate", GEN)
        snap = p.status()
    assert snap["kind"] == "OpenAIProvider" and snap["name"] == "openai"
    assert snap["totals"]["tokens_per_s"] > 0
    assert snap["totals"]["routing"].startswith("fleet:")
    assert all(i["queue"]["engine"] == "vllm" for i in snap["instances"])
    learned = [i["routing"]["rates"].get("llama3.2") for i in snap["instances"]]
    assert any(r and r["tokens_per_s"] for r in learned)  # the fleet learned the speed


def test_error_bodies_of_each_engine_read_as_one_message() -> None:
    openai_style = (
        '{"error": {"message": "m1", "type": "x", "param": null, "code": "model_not_found"}}'
    )
    vllm_old = '{"object": "error", "message": "m2", "type": "NotFoundError", "code": 404}'
    tgi = '{"error": "m3", "error_type": "validation"}'
    assert [error_message(t) for t in (openai_style, vllm_old, tgi)] == ["m1", "m2", "m3"]
    assert error_code(openai_style) == "model_not_found" and error_code(vllm_old) == "404"
    assert error_message("<html>bad gateway</html>") == "bad gateway"  # a proxy page, unmarked
