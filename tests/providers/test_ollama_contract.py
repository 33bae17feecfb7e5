"""OllamaProvider contract: what every call returns, against the stand-in and, when
``GLEITZEIT_TEST_OLLAMA_URL`` is set, against a real Ollama too.

The real-Ollama target exists only when the variable is set (the target list is built from
it), so these tests run against the stand-in everywhere and against Ollama where there is one.
``GLEITZEIT_TEST_OLLAMA_MODEL`` picks the model there (default: the first one it lists).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from gleitzeit_jupyter.hub import CircuitState, UserError
from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

REAL_URL = os.environ.get("GLEITZEIT_TEST_OLLAMA_URL")
TARGETS = ["standin"] + (["real"] if REAL_URL else [])


@dataclass
class Target:
    url: str
    model: str  # as listed by /api/tags, with its tag
    standin: OllamaStandIn | None


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "real":
        assert REAL_URL is not None
        model = (
            os.environ.get("GLEITZEIT_TEST_OLLAMA_MODEL")
            or httpx.get(f"{REAL_URL}/api/tags", timeout=5).json()["models"][0]["model"]
        )
        yield Target(REAL_URL, model, None)
        return
    with OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=500) as srv:
        yield Target(srv.url, "llama3.2:latest", srv)


@pytest.fixture
async def provider(target: Target) -> AsyncIterator[OllamaProvider]:
    p = OllamaProvider(hosts=[target.url], auto_discover=False, health_check_interval=60)
    await p.initialize()
    yield p
    await p.shutdown()


def _short(model: str) -> str:
    return model.removesuffix(":latest")


def _check_usage(r: dict, target: Target, inst: str) -> None:
    assert r["instance"] == inst
    assert r["model"] in (target.model, _short(target.model))
    assert r["latency_ms"] > 0
    assert 0 <= r["time_to_first_token_ms"] <= r["latency_ms"]
    # a real Ollama leaves prompt_eval_count out when the whole prompt was cached
    if target.standin is not None or r["prompt_tokens"] is not None:
        assert isinstance(r["prompt_tokens"], int) and r["prompt_tokens"] > 0
    assert isinstance(r["completion_tokens"], int) and r["completion_tokens"] > 0
    assert r["tokens_per_s"] > 0
    assert r["load_ms"] >= 0
    assert r["done_reason"] in ("stop", "length")


async def test_generate_returns_text_and_usage(provider: OllamaProvider, target: Target) -> None:
    inst = provider.instances[0].id
    r = await provider.execute(
        "llm/generate",
        {"model": target.model, "prompt": "Say hi.", "max_tokens": 8, "temperature": 0},
    )
    assert isinstance(r["response"], str) and r["response"]
    _check_usage(r, target, inst)
    assert r["completion_tokens"] <= 8


async def test_short_and_tagged_model_names_are_one_model(
    provider: OllamaProvider, target: Target
) -> None:
    params = {"prompt": "Say hi.", "max_tokens": 4, "seed": 7, "temperature": 0}
    a = await provider.execute("llm/generate", {"model": target.model, **params})
    b = await provider.execute("llm/generate", {"model": _short(target.model), **params})
    assert a["response"] == b["response"]


async def test_stream_generate_yields_text_then_usage(
    provider: OllamaProvider, target: Target
) -> None:
    chunks = [
        c
        async for c in provider.stream(
            "llm/generate", {"model": target.model, "prompt": "Count to five.", "max_tokens": 10}
        )
    ]
    assert len(chunks) >= 2
    assert all(c["done"] is False and isinstance(c["response"], str) for c in chunks[:-1])
    final = chunks[-1]
    assert final["done"] is True
    _check_usage(final, target, provider.instances[0].id)
    assert final["completion_tokens"] == len(chunks) - 1 or target.standin is None


async def test_chat_and_stream_chat(provider: OllamaProvider, target: Target) -> None:
    msgs = [{"role": "user", "content": "Say hi."}]
    r = await provider.execute(
        "llm/chat", {"model": target.model, "messages": msgs, "max_tokens": 8}
    )
    assert r["message"]["role"] == "assistant" and r["response"] == r["message"]["content"]
    _check_usage(r, target, provider.instances[0].id)
    chunks = [
        c
        async for c in provider.stream(
            "llm/chat", {"model": target.model, "messages": msgs, "max_tokens": 8}
        )
    ]
    assert chunks[-1]["done"] and all("message" in c for c in chunks[:-1])


async def test_embed_str_and_list(provider: OllamaProvider, target: Target) -> None:
    one = await provider.execute("llm/embed", {"model": target.model, "input": "hello"})
    two = await provider.execute("llm/embed", {"model": target.model, "input": ["a", "b"]})
    assert len(one["embeddings"]) == 1 and len(two["embeddings"]) == 2
    assert len(one["embeddings"][0]) == len(two["embeddings"][1]) > 0
    assert one["instance"] == provider.instances[0].id


async def test_models_lists_instances(provider: OllamaProvider, target: Target) -> None:
    r = await provider.execute("llm/models")
    entry = next(m for m in r["models"] if m["name"] == target.model)
    assert entry["instances"] == [provider.instances[0].id]
    assert r["instances"][provider.instances[0].id]["reachable"] is True


async def test_unknown_model_is_a_user_error_without_retry(
    provider: OllamaProvider, target: Target
) -> None:
    inst = provider.instances[0]
    with pytest.raises(UserError) as ei:
        await provider.execute("llm/generate", {"model": "no-such-model-xyz", "prompt": "x"})
    assert "no-such-model-xyz" in str(ei.value) and inst.id in str(ei.value)
    assert inst.breaker_state is CircuitState.CLOSED
    assert provider.metrics().set_index("instance").loc[inst.id, "failures"] == 0
    if target.standin is not None:  # routed nowhere: Ollama was not even asked
        assert target.standin.requests_to("/api/generate") == []


async def test_bad_calls_are_user_errors(provider: OllamaProvider, target: Target) -> None:
    with pytest.raises(UserError, match="prompt"):  # none is Ollama's "load the model"
        await provider.execute("llm/generate", {"model": target.model, "prompt": ["x"]})
    with pytest.raises(UserError, match="max_token"):
        await provider.execute(
            "llm/generate", {"model": target.model, "prompt": "x", "max_token": 3}
        )
    with pytest.raises(UserError, match="llm/nope"):
        await provider.execute("llm/nope", {})
    with pytest.raises(UserError, match="does not stream"):
        async for _ in provider.stream("llm/embed", {"model": target.model, "input": "x"}):
            pass


async def test_cancelled_stream_leaves_no_connection(
    provider: OllamaProvider, target: Target
) -> None:
    if target.standin is not None:
        target.standin.tokens_per_s = 20  # slow enough to be cancelled mid-way
        target.standin.default_tokens = 200
    got = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(
            "llm/generate", {"model": target.model, "prompt": "Write a long story."}
        ):
            got.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pool = provider.instances[0].handle.client._transport._pool
    assert [c for c in pool.connections if not c.is_idle()] == []
    assert provider.instances[0].in_flight == 0
