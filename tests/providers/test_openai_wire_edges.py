"""OpenAIProvider against servers that answer in the corners of the wire format: server-sent
events split at every byte, streams without ``[DONE]`` (TGI before 2.2), llama.cpp's
``error:`` field, ``event: error``, 200 answers that are not a chat completion, HTML error
pages. A raw TCP server sends the exact bytes, so nothing in between tidies them up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gleitzeit_jupyter.hub import NoResourceAvailable, ResourceFailed, UserError
from gleitzeit_jupyter.providers.openai import OpenAIProvider, base_url
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

GEN = {"model": "m", "prompt": "hi"}
MODELS = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]})
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None):
    delta = {} if content is None else {"content": content}
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    data = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices}
    if usage:
        data["usage"] = usage
    return f"data: {json.dumps(data)}\n\n"


FINISHED = _chunk("He") + _chunk("llo") + _chunk(finish="stop") + _chunk(usage=USAGE)


def _http(status: int, body: str, ctype: str = "application/json") -> bytes:
    raw = body.encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(raw)}\r\n\r\n"
    return head.encode() + raw


Answer = Callable[[asyncio.StreamWriter, str], Awaitable[None]]  # (writer, Authorization)


async def _serve(answer: Answer, metrics: str | None = None) -> AsyncIterator[str]:
    """A server listing model ``m``, with ``metrics`` on /metrics; every completion request
    gets ``answer``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                path, length, auth = line.split()[1].decode(), 0, ""
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "authorization":
                        auth = value.strip()
                await reader.readexactly(length)
                if path.endswith("/models"):
                    writer.write(_http(200, MODELS))
                elif path == "/metrics" and metrics is not None:
                    writer.write(_http(200, metrics, "text/plain; version=0.0.4"))
                elif not path.startswith("/v1/"):
                    writer.write(_http(404, "not found", "text/plain"))
                else:
                    await answer(writer, auth)
                    return
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


def _sse(body: str, step: int = 1) -> Answer:
    """Stream ``body`` as text/event-stream, ``step`` bytes per TCP write, then close."""

    async def answer(writer: asyncio.StreamWriter, auth: str) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        raw = body.encode()
        for i in range(0, len(raw), step):
            writer.write(raw[i : i + step])
            await writer.drain()

    return answer


def _whole(status: int, body: str, ctype: str = "application/json") -> Answer:
    async def answer(writer: asyncio.StreamWriter, auth: str) -> None:
        writer.write(_http(status, body, ctype))
        await writer.drain()

    return answer


async def _stream(
    answer: Answer, key: str | None = None
) -> tuple[list[dict], BaseException | None]:
    chunks: list[dict] = []
    async for url in _serve(answer):
        async with OpenAIProvider(hosts=[url], api_key=key, retries=0, busy_wait=0.5) as p:
            try:
                async for chunk in p.stream("llm/generate", GEN):
                    chunks.append(chunk)
            except (ResourceFailed, UserError) as exc:
                return chunks, exc
    return chunks, None


async def _execute(answer: Answer, key: str | None = None) -> dict | BaseException:
    async for url in _serve(answer):
        async with OpenAIProvider(hosts=[url], api_key=key, retries=0, busy_wait=0.5) as p:
            try:
                return await p.execute("llm/generate", GEN)
            except (ResourceFailed, UserError) as exc:
                return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "body",
    [
        FINISHED + "data: [DONE]\n\n",
        (FINISHED + "data: [DONE]\n\n").replace("\n", "\r\n"),
        (FINISHED + "data: [DONE]\n\n").replace("data: ", "data:"),
        ": ping\n\n"
        + FINISHED.replace("\n\ndata", "\n\n: keep-alive\n\ndata")
        + "data: [DONE]\n\n",
    ],
    ids=["lf", "crlf", "no-space", "comments"],
)
async def test_events_split_at_every_byte_assemble_into_the_answer(body: str) -> None:
    chunks, error = await _stream(_sse(body, step=1))
    assert error is None
    assert [c["response"] for c in chunks[:-1]] == ["He", "llo"]
    final = chunks[-1]
    assert final["done"] and final["response"] == "Hello"
    assert final["done_reason"] == "stop" and final["completion_tokens"] == 2


async def test_a_finished_stream_without_done_is_a_complete_answer() -> None:
    # TGI before 2.2 and some llama.cpp forks close the stream after the last chunk.
    chunks, error = await _stream(_sse(FINISHED, step=7))
    assert error is None
    assert chunks[-1]["done"] and chunks[-1]["response"] == "Hello"
    assert chunks[-1]["completion_tokens"] == 2


async def test_a_stream_cut_before_its_finish_reason_is_a_failure() -> None:
    chunks, error = await _stream(_sse(_chunk("He") + 'data: {"id":', step=5))
    assert [c["response"] for c in chunks] == ["He"]
    assert isinstance(error, ResourceFailed) and "ended the stream" in str(error)


async def test_llama_cpp_error_field_mid_stream_carries_the_servers_message() -> None:
    err = {"code": 500, "message": "KV cache full", "type": "server_error"}
    chunks, error = await _stream(_sse(_chunk("He") + f"error: {json.dumps(err)}\n\n"))
    assert [c["response"] for c in chunks] == ["He"]
    assert isinstance(error, ResourceFailed) and "KV cache full" in str(error)


@pytest.mark.parametrize("data", ['{"message": "engine died"}', "engine died"])
async def test_an_error_event_mid_stream_carries_the_servers_message(data: str) -> None:
    body = _chunk("He") + f"event: error\ndata: {data}\n\n"
    chunks, error = await _stream(_sse(body))
    assert [c["response"] for c in chunks] == ["He"]
    assert isinstance(error, ResourceFailed) and "engine died" in str(error)


async def test_a_client_error_inside_the_stream_is_the_callers() -> None:
    # llama.cpp reports a prompt longer than the context this way: no server is at fault,
    # so no breaker failure and no retry elsewhere.
    err = {"code": 400, "message": "the request exceeds the available context size",
           "type": "exceed_context_size_error"}  # fmt: skip
    chunks, error = await _stream(_sse(f"error: {json.dumps(err)}\n\n"))
    assert chunks == []
    assert isinstance(error, UserError) and "context size" in str(error)


@pytest.mark.parametrize(
    "body",
    ["[1, 2]", '{"id": "x", "model": "m"}', '{"choices": ["a"]}', '{"choices": []}'],
    ids=["list", "no-choices", "choice-not-object", "empty-choices"],
)
async def test_a_200_that_is_no_chat_completion_is_the_servers_failure(body: str) -> None:
    result = await _execute(_whole(200, body))
    assert isinstance(result, ResourceFailed), result
    assert "not a chat completion" in str(result)
    assert "AttributeError" not in str(result)


async def test_an_html_error_page_reads_as_one_line() -> None:
    page = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n</body>\n</html>\n"
    result = await _execute(_whole(502, page, "text/html"))
    assert isinstance(result, ResourceFailed)
    assert "\n" not in str(result) and "502 Bad Gateway" in str(result)


@pytest.mark.parametrize(
    "pasted",
    [
        "http://gpu-2:8000/v1/chat/completions",
        "http://gpu-2:8000/v1/chat/completions/",
        "http://gpu-2:8000/v1/completions",
        "http://gpu-2:8000/v1/models",
        "http://gpu-2:8000/v1/embeddings",
    ],
)
def test_an_endpoint_url_pasted_for_the_base_url_is_read_as_its_base(pasted: str) -> None:
    assert base_url(pasted) == "http://gpu-2:8000/v1"


def test_a_base_url_keeps_a_proxy_prefix() -> None:
    assert base_url("https://proxy/openai/v1/") == "https://proxy/openai/v1"


async def test_the_api_key_is_in_no_repr_of_the_pool() -> None:
    with OpenAIStandIn(api_key="sk-secret-42") as srv:
        async with OpenAIProvider(hosts=[srv.url], api_key="sk-secret-42") as p:
            await p.execute("llm/generate", {"model": "llama3.2", "prompt": "hi"})
            inst = p.instances[0]
            for shown in (inst, inst.handle, p, p.status()):
                assert "sk-secret-42" not in repr(shown)


def _echo(status: int, sse: bool = False) -> Answer:
    """An error that quotes the key it was sent, as careless servers do."""

    async def answer(writer: asyncio.StreamWriter, auth: str) -> None:
        body = json.dumps({"error": {"message": f"bad credentials {auth}", "code": status}})
        if sse:
            await _sse(_chunk("He") + f"data: {body}\n\n")(writer, auth)
        else:
            writer.write(_http(status, body))
            await writer.drain()

    return answer


@pytest.mark.parametrize("status", [401, 429, 500])
async def test_a_key_the_server_quotes_back_is_not_shown(status: int) -> None:
    result = await _execute(_echo(status), key="sk-echoed-99")
    assert isinstance(result, (ResourceFailed, UserError)), result
    assert "bad credentials" in str(result) and "sk-echoed-99" not in str(result)


async def test_a_key_quoted_back_inside_a_stream_is_not_shown() -> None:
    _, error = await _stream(_echo(500, sse=True), key="sk-echoed-99")
    assert error is not None and "bad credentials" in str(error)
    assert "sk-echoed-99" not in str(error)


async def test_queue_gauges_summing_past_any_number_leave_routing_working() -> None:
    # per-model label sets each near the float limit: their sum is no number of requests
    huge = "".join(
        f'vllm:num_requests_{g}{{model_name="{m}"}} 1e308\n'
        for g in ("running", "waiting")
        for m in ("a", "b")
    )
    async for url in _serve(_whole(200, json.dumps(_completion())), metrics=huge):
        async with OpenAIProvider(hosts=[url]) as p:
            result = await p.execute("llm/generate", GEN)
            assert result["response"] == "Hi"
            assert p.instances[0].metadata.get("queue") is None


def _completion() -> dict:
    message = {"role": "assistant", "content": "Hi"}
    return {"id": "c", "model": "m", "choices": [{"index": 0, "message": message}], "usage": USAGE}


@pytest.mark.parametrize(
    "url", ["http://me:hunter2@gpu-2:8000/v1", "http://me:hunter2@gpu-2:99999", "me:hunter2@gpu-2"]
)
def test_credentials_in_a_server_url_are_refused_without_showing_them(url: str) -> None:
    # They would be dropped (keys go as a Bearer header) and shown wherever the URL is.
    with pytest.raises(UserError) as info:
        base_url(url)
    assert "hunter2" not in str(info.value)
    assert "api_key" in str(info.value) or "credentials" in str(info.value)


async def test_chunks_carrying_a_null_error_field_are_ordinary_chunks() -> None:
    # As the openai client reads them: only a non-empty "error" is a failure.
    body = "\n\n".join(
        line.replace('"model": "m"', '"model": "m", "error": null')
        for line in FINISHED.strip().split("\n\n")
    )
    chunks, error = await _stream(_sse(body + "\n\ndata: [DONE]\n\n", step=64))
    assert error is None
    assert chunks[-1]["response"] == "Hello"


@pytest.mark.parametrize(
    "chunk",
    ['{"choices": ["x"]}', '{"choices": [{"delta": "x"}]}', '{"choices": {"0": {}}}'],
    ids=["choice-not-object", "delta-not-object", "choices-not-list"],
)
async def test_a_chunk_that_is_no_chat_completion_chunk_fails_the_stream_plainly(
    chunk: str,
) -> None:
    chunks, error = await _stream(_sse(_chunk("He") + f"data: {chunk}\n\n"))
    assert [c["response"] for c in chunks] == ["He"]
    assert isinstance(error, ResourceFailed) and "AttributeError" not in str(error)
    assert "not a chat completion chunk" in str(error)


async def test_a_wrong_base_url_path_is_named_in_the_error() -> None:
    # The server is up but has no models endpoint under this path: say so, rather than
    # "did not list their models yet; check they are up".
    with OpenAIStandIn() as srv:
        url = srv.url.removesuffix("/v1") + "/api"
        async with OpenAIProvider(hosts=[url], health_check_interval=60) as p:
            with pytest.raises(NoResourceAvailable) as info:
                await p.execute("llm/generate", {"model": "llama3.2", "prompt": "hi"})
    text = str(info.value)
    assert "/api/models" in text and "404" in text and "/v1" in text


@pytest.mark.parametrize(
    "page", ["<!doctype html><html><body>app</body></html>", '["m"]', '{"data": "m"}']
)
async def test_a_models_answer_that_is_no_model_list_is_named_in_the_error(page: str) -> None:
    # e.g. a web app answering its index page for every path, /v1/models included
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (line := await reader.readline()) and line != b"\r\n":
            pass
        writer.write(_http(200, page, "text/html"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        async with OpenAIProvider(hosts=[url], health_check_interval=60) as p:
            with pytest.raises(NoResourceAvailable) as info:
                await p.execute("llm/generate", GEN)
    assert "/v1/models answered with no model list" in str(info.value)
