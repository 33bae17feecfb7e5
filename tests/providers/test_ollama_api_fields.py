"""Ollama's documented request fields, accepted where Ollama expects them, and its response
fields kept in results."""

from __future__ import annotations

import base64
import json

import pytest

from gleitzeit_jupyter.hub import UserError
from gleitzeit_jupyter.providers.ollama import OllamaProvider
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

CAPS = {"qwen3": ["completion", "thinking", "tools", "vision", "insert"]}


@pytest.fixture
async def provider():
    with OllamaStandIn(models=["qwen3", "nomic-embed-text"], capabilities=CAPS) as srv:
        async with OllamaProvider(hosts=[srv.url], auto_discover=False) as p:
            yield p, srv


async def test_a_body_copied_from_ollamas_docs_is_sent_as_it_is(provider) -> None:
    p, srv = provider
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}}
    body = {
        "model": "qwen3",
        "prompt": "Ollama is 22 years old",
        "stream": False,
        "format": schema,
        "options": {"temperature": 0, "min_p": 0.05, "num_ctx": 2048, "seed": 1},
        "keep_alive": "5m",
        "raw": False,
        "suffix": " end",
        "logprobs": True,
        "top_logprobs": 2,
        "images": [base64.b64encode(b"img").decode()],
    }
    r = await p.execute("llm/generate", body)
    answer = json.loads(r["response"])  # shaped by the schema
    assert list(answer) == ["age"] and isinstance(answer["age"], int)
    sent = srv.requests_to("/api/generate")[-1].body
    assert sent == {**body, "stream": False}
    for key in ("load_duration", "prompt_eval_count", "eval_count", "eval_duration"):
        assert key in r
    assert r["done_reason"] == "stop"


async def test_chat_messages_keep_images_tool_calls_and_tool_names(provider) -> None:
    p, srv = provider
    msgs = [
        {"role": "user", "content": "weather?", "images": [base64.b64encode(b"x").decode()]},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "w"}}]},
        {"role": "tool", "content": "sunny", "tool_name": "w"},
    ]
    r = await p.execute("llm/chat", {"model": "qwen3", "messages": msgs, "think": "medium"})
    assert r["thinking"] and r["message"]["thinking"] == r["thinking"]
    assert srv.requests_to("/api/chat")[-1].body["messages"] == msgs
    chunks = [
        c
        async for c in p.stream(
            "llm/chat", {"model": "qwen3", "messages": msgs, "think": True, "stream": True}
        )
    ]
    assert chunks[0]["thinking"] and chunks[-1]["done"]


async def test_embed_takes_dimensions_and_truncate(provider) -> None:
    p, _ = provider
    r = await p.execute(
        "llm/embed",
        {"model": "nomic-embed-text", "input": ["a"], "dimensions": 8, "truncate": True},
    )
    assert len(r["embeddings"][0]) == 8


@pytest.mark.parametrize(
    ("method", "params", "match"),
    [
        ("llm/generate", {"prompt": "x", "stream": True}, "stream"),
        ("llm/generate", {"prompt": "x", "format": "yaml"}, "format"),
        ("llm/generate", {"prompt": "x", "think": "very"}, "think"),
        ("llm/generate", {"prompt": "x", "images": ["not base64!"]}, "base64"),
        ("llm/generate", {"prompt": "x", "options": {"temprature": 1}}, "temperature"),
        ("llm/generate", {"prompt": "x", "promt": "y"}, "known parameters: .*prompt"),
        ("llm/chat", {"messages": [{"role": "user", "text": "x"}]}, "message fields"),
        ("llm/generate", {"prompt": "x", "max_tokens": 10**400}, "max_tokens"),
        ("llm/generate", {"prompt": "x", "options": {"num_predict": 2**63}}, "num_predict"),
        ("llm/chat", {"messages": [], "num_predict": True}, "num_predict"),
        ("llm/chat", {"messages": [], "tools": "all"}, "tools"),
    ],
)
async def test_a_malformed_field_is_a_user_error_naming_it(provider, method, params, match) -> None:
    p, srv = provider
    before = len(srv.api.requests)
    with pytest.raises(UserError, match=match):
        await p.execute(method, {"model": "qwen3", **params})
    assert len(srv.api.requests) == before or all(
        r.path not in ("/api/generate", "/api/chat") for r in list(srv.api.requests)[before:]
    )


async def test_stream_false_in_a_stream_call_is_a_user_error(provider) -> None:
    p, _ = provider
    with pytest.raises(UserError, match="stream"):
        async for _ in p.stream("llm/generate", {"model": "qwen3", "prompt": "x", "stream": False}):
            pass


async def test_the_documented_load_and_unload_bodies_need_no_prompt(provider) -> None:
    # Ollama's docs load a model with {"model": ...} alone and unload it with keep_alive 0;
    # its GenerateRequest has no required prompt.
    p, srv = provider
    loaded = await p.execute("llm/generate", {"model": "qwen3"})
    assert loaded["done_reason"] == "load"
    assert srv.requests_to("/api/generate")[-1].body == {"model": "qwen3", "stream": False}
    unloaded = await p.execute("llm/generate", {"model": "qwen3", "keep_alive": 0})
    assert unloaded["done_reason"] == "unload"
    with pytest.raises(UserError, match="prompt"):
        await p.execute("llm/generate", {"model": "qwen3", "prompt": 3})


def test_impossible_figures_in_an_answer_are_not_read_as_figures() -> None:
    # A broken server's durations and counts (too big for a float, infinite, negative)
    # must not crash shaping the result, nor be reported as a speed.
    from gleitzeit_jupyter.providers import _ollama_wire as wire

    for bad in (
        {"eval_count": 10**400, "eval_duration": 10, "total_duration": 10**400},
        {"eval_count": -5, "eval_duration": 10, "load_duration": float("inf")},
        {"eval_count": True, "eval_duration": float("nan")},
    ):
        r = wire.shape_result("llm/generate", {"response": "x", **bad}, 5.0, None, "i")
        assert r["tokens_per_s"] is None and r["total_ms"] is None and r["load_ms"] is None
        assert r["time_to_first_token_ms"] is None or r["time_to_first_token_ms"] >= 0
