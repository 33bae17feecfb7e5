"""OpenAIProvider's contract: the Ollama provider's methods and result shapes, over the
OpenAI wire format. Runs against the stand-in, and also against a real server when
GLEITZEIT_TEST_OPENAI_URL is set (an opt-in run: ``GLEITZEIT_TEST_OPENAI_MODEL`` names a
chat model it serves, ``OPENAI_API_KEY`` its key if it wants one)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from gleitzeit_jupyter.hub import UserError
from gleitzeit_jupyter.providers import OpenAIConfig, OpenAIProvider
from gleitzeit_jupyter.providers.openai import base_url
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

REAL = os.environ.get("GLEITZEIT_TEST_OPENAI_URL")


@pytest.fixture(scope="module")
def standin() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn(models=["llama3.2", "bge-small"], tokens_per_s=500) as s:
        yield s


# The real server is a target only when one is named: nothing to skip otherwise.
@pytest.fixture(params=["standin", "real"] if REAL else ["standin"])
def target(request: pytest.FixtureRequest, standin: OpenAIStandIn) -> tuple[str, str]:
    """(base URL, chat model) of the server under test."""
    if request.param == "real":
        assert REAL
        return REAL, os.environ.get("GLEITZEIT_TEST_OPENAI_MODEL", "")
    return standin.url, "llama3.2"


@pytest.fixture
async def pool(target: tuple[str, str]) -> AsyncIterator[tuple[OpenAIProvider, str]]:
    url, model = target
    async with OpenAIProvider(hosts=[url], health_check_interval=60) as p:
        if not model:  # a real server: its first model
            model = (await p.execute("llm/models"))["models"][0]["name"]
        yield p, model


def test_base_url_adds_v1_and_scheme_only_when_missing() -> None:
    assert base_url("gpu-2:8000") == "http://gpu-2:8000/v1"
    assert base_url("http://gpu-2:8000/v1/") == "http://gpu-2:8000/v1"
    assert base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"
    assert base_url("0.0.0.0:30000") == "http://127.0.0.1:30000/v1"
    assert base_url("[::1]:8080") == "http://[::1]:8080/v1"
    with pytest.raises(UserError):
        base_url("ftp://x")


async def test_generate_returns_the_ollama_result_shape(pool: tuple[OpenAIProvider, str]) -> None:
    p, model = pool
    r = await p.execute("llm/generate", {"model": model, "prompt": "Say hi", "max_tokens": 8})
    assert isinstance(r["response"], str) and r["response"]
    assert r["instance"] == p.instances[0].id
    assert 0 < r["completion_tokens"] <= 8 and r["eval_count"] == r["completion_tokens"]
    assert r["prompt_tokens"] > 0 and r["tokens_per_s"] > 0
    assert r["done_reason"] in ("length", "stop")


async def test_chat_stream_yields_text_then_a_final_with_usage(
    pool: tuple[OpenAIProvider, str],
) -> None:
    p, model = pool
    msgs = [{"role": "user", "content": "Count to five."}]
    chunks = [c async for c in p.stream("llm/chat", {"model": model, "messages": msgs})]
    *parts, final = chunks
    assert parts and all(not c["done"] and "message" in c for c in parts)
    assert final["done"] is True
    assert final["response"] == "".join(c["response"] for c in parts)
    assert final["message"]["content"] == final["response"]
    assert final["completion_tokens"] > 0 and final["time_to_first_token_ms"] is not None
    assert final["tokens_per_s"] > 0


async def test_options_map_to_openai_names(standin: OpenAIStandIn) -> None:
    async with OpenAIProvider(hosts=[standin.url], health_check_interval=60) as p:
        await p.execute(
            "llm/generate",
            {
                "model": "llama3.2",
                "prompt": "x",
                "system": "be brief",
                "options": {"temperature": 0.2, "num_predict": 4, "top_p": 0.9},
                "seed": 7,
                "stop": ["\n"],
                "format": {"type": "object", "properties": {"a": {"type": "string"}}},
            },
        )
    body = standin.requests_to("/v1/chat/completions")[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "x"},
    ]
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.2, 4, 0.9)
    assert (body["seed"], body["stop"]) == (7, ["\n"])
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["properties"] == {
        "a": {"type": "string"}
    }


async def test_format_json_is_json_object_and_the_answer_parses(standin: OpenAIStandIn) -> None:
    async with OpenAIProvider(hosts=[standin.url], health_check_interval=60) as p:
        r = await p.execute("llm/generate", {"model": "llama3.2", "prompt": "x", "format": "json"})
    assert standin.requests_to("/v1/chat/completions")[-1].body["response_format"] == {
        "type": "json_object"
    }
    assert isinstance(json.loads(r["response"]), dict)


async def test_tools_round_trip_in_ollama_shape(standin: OpenAIStandIn) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
    }
    msgs = [{"role": "user", "content": "add"}]
    async with OpenAIProvider(hosts=[standin.url], health_check_interval=60) as p:
        r = await p.execute("llm/chat", {"model": "llama3.2", "messages": msgs, "tools": [tool]})
        streamed = [
            c
            async for c in p.stream(
                "llm/chat", {"model": "llama3.2", "messages": msgs, "tools": [tool]}
            )
        ][-1]
        # the call goes back in the history as Ollama writes it; sent as OpenAI wants it
        history = [*msgs, r["message"], {"role": "tool", "content": "3", "tool_name": "add"}]
        await p.execute("llm/chat", {"model": "llama3.2", "messages": history})
    for result in (r, streamed):
        assert result["tool_calls"][0]["function"]["name"] == "add"
        assert isinstance(result["tool_calls"][0]["function"]["arguments"]["a"], int)
    sent = standin.requests_to("/v1/chat/completions")[-1].body["messages"]
    assert (
        json.loads(sent[1]["tool_calls"][0]["function"]["arguments"])
        == r["tool_calls"][0]["function"]["arguments"]
    )
    assert sent[2]["role"] == "tool" and sent[2]["tool_call_id"]


async def test_embed_and_models(standin: OpenAIStandIn) -> None:
    async with OpenAIProvider(hosts=[standin.url], health_check_interval=60) as p:
        r = await p.execute("llm/embed", {"model": "bge-small", "input": ["a", "b"]})
        models = await p.execute("llm/models")
        ident = p.instances[0].id
    assert len(r["embeddings"]) == 2 and len(r["embeddings"][0]) == 16
    assert [m["name"] for m in models["models"]] == ["bge-small", "llama3.2"]
    assert models["models"][0]["instances"] == [ident]


async def test_key_is_sent_as_bearer_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPU2_KEY", "sk-two")
    with OpenAIStandIn(api_key="sk-one") as one, OpenAIStandIn(api_key="sk-two") as two:
        hosts = [one.url, OpenAIConfig(host=two.url, api_key_env="GPU2_KEY")]
        async with OpenAIProvider(hosts=hosts, api_key={one.url: "sk-one"}) as p:
            for inst in p.instances:
                r = await p.execute(
                    "llm/generate", {"model": "llama3.2", "prompt": "x"}, instance=inst.id
                )
                assert r["response"]


async def test_ollama_only_fields_are_a_clear_user_error(standin: OpenAIStandIn) -> None:
    async with OpenAIProvider(hosts=[standin.url], health_check_interval=60) as p:
        with pytest.raises(UserError, match=r"think.*Ollama"):
            await p.execute("llm/generate", {"model": "llama3.2", "prompt": "x", "think": True})
        with pytest.raises(UserError, match="num_ctx"):
            await p.execute(
                "llm/generate", {"model": "llama3.2", "prompt": "x", "options": {"num_ctx": 8}}
            )


async def test_numpy_values_are_sent_as_json_numbers(standin: OpenAIStandIn) -> None:
    async with OpenAIProvider(hosts=[standin.url], health_check_interval=60) as p:
        await p.execute("llm/generate", {"model": "llama3.2", "prompt": "x", "seed": np.int64(3)})
        with pytest.raises(UserError, match="cannot be sent as JSON"):
            await p.execute(
                "llm/generate", {"model": "llama3.2", "prompt": "x", "temperature": float("nan")}
            )
    assert standin.requests_to("/v1/chat/completions")[-1].body["seed"] == 3
