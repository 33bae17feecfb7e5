"""The OpenAI stand-in speaks the wire format the official ``openai`` client reads: objects,
streamed chunks with usage, and errors as the client's exception types."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from gleitzeit_jupyter.testing.openai import OpenAIStandIn

MSG = [{"role": "user", "content": "why is the sky blue"}]


@pytest.fixture
def srv() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn(models=["Qwen/Qwen2.5-7B-Instruct", "bge-small"], api_key="sk-test") as s:
        yield s


def _client(srv: OpenAIStandIn, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, timeout=10)


def test_models_list_as_the_client_reads_it(srv: OpenAIStandIn) -> None:
    ids = [m.id for m in _client(srv).models.list()]
    assert ids == ["Qwen/Qwen2.5-7B-Instruct", "bge-small"]


def test_chat_completion_has_message_finish_reason_and_usage(srv: OpenAIStandIn) -> None:
    r = _client(srv).chat.completions.create(
        model="Qwen/Qwen2.5-7B-Instruct", messages=MSG, max_tokens=5, seed=3
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert len(r.choices[0].message.content.split()) == 5
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5


def test_stream_with_include_usage_ends_with_a_usage_chunk(srv: OpenAIStandIn) -> None:
    chunks = list(
        _client(srv).chat.completions.create(
            model="Qwen/Qwen2.5-7B-Instruct",
            messages=MSG,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "stop"
    whole = _client(srv).chat.completions.create(model="Qwen/Qwen2.5-7B-Instruct", messages=MSG)
    assert text == whole.choices[0].message.content  # same prompt, same deterministic answer


def test_tools_come_back_as_tool_calls_with_json_arguments(srv: OpenAIStandIn) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    r = _client(srv).chat.completions.create(
        model="Qwen/Qwen2.5-7B-Instruct", messages=MSG, tools=[tool]
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather"
    assert set(json.loads(call.function.arguments)) == {"city"}


def test_json_schema_response_format_is_honoured(srv: OpenAIStandIn) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = _client(srv).chat.completions.create(
        model="Qwen/Qwen2.5-7B-Instruct",
        messages=MSG,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    assert isinstance(json.loads(r.choices[0].message.content)["n"], int)


def test_embeddings_one_row_per_input_in_order(srv: OpenAIStandIn) -> None:
    r = _client(srv).embeddings.create(model="bge-small", input=["a", "b", "c"])
    assert [d.index for d in r.data] == [0, 1, 2]
    assert len(r.data[0].embedding) == 16 and r.data[0].embedding != r.data[1].embedding


def test_wrong_key_is_authentication_error(srv: OpenAIStandIn) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        _client(srv, key="wrong").models.list()
    assert info.value.code == "invalid_api_key"


def test_unknown_model_is_not_found_with_model_not_found_code(srv: OpenAIStandIn) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _client(srv).chat.completions.create(model="nope", messages=MSG)
    assert info.value.code == "model_not_found"


def test_rate_limit_is_rate_limit_error_with_retry_after(srv: OpenAIStandIn) -> None:
    srv.faults.update(rate_limit_rate=1.0, retry_after=7)
    with pytest.raises(openai.RateLimitError) as info:
        _client(srv).chat.completions.create(model="Qwen/Qwen2.5-7B-Instruct", messages=MSG)
    assert info.value.response.headers["retry-after"] == "7"


def test_server_error_is_api_status_error_500(srv: OpenAIStandIn) -> None:
    srv.faults.update(error_rate=1.0)
    with pytest.raises(openai.InternalServerError) as info:
        _client(srv).chat.completions.create(model="Qwen/Qwen2.5-7B-Instruct", messages=MSG)
    assert isinstance(info.value, openai.APIStatusError) and info.value.status_code == 500


def test_mid_stream_error_reaches_the_client_as_an_error(srv: OpenAIStandIn) -> None:
    srv.faults.update(stream_error_after=3)
    got = []
    with pytest.raises(openai.APIError):
        for c in _client(srv).chat.completions.create(
            model="Qwen/Qwen2.5-7B-Instruct", messages=MSG, stream=True
        ):
            got.append(c)
    assert 0 < len(got) <= 4


def test_reset_is_a_connection_error(srv: OpenAIStandIn) -> None:
    srv.faults.update(reset_rate=1.0)
    with pytest.raises(openai.APIConnectionError):
        _client(srv).chat.completions.create(model="Qwen/Qwen2.5-7B-Instruct", messages=MSG)


def test_metrics_carry_queue_depth_in_vllm_names(srv: OpenAIStandIn) -> None:
    srv.faults.update(extra_waiting=5)
    text = httpx.get(f"{srv.root}/metrics").text
    assert 'vllm:num_requests_waiting{model_name="Qwen/Qwen2.5-7B-Instruct"} 5.0' in text
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert httpx.get(f"{srv.root}/health").status_code == 200


def test_engine_without_metrics_or_health_answers_404() -> None:
    with OpenAIStandIn(engine=None, has_health=False) as s:
        assert httpx.get(f"{s.root}/metrics").status_code == 404
        assert httpx.get(f"{s.root}/health").status_code == 404
        assert [m.id for m in openai.OpenAI(base_url=s.url, api_key="x").models.list()]
