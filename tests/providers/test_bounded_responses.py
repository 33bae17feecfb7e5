"""A server sending an endless line or body, a huge Content-Length or endless chunks fails
the call with a ResourceFailed naming the server and the limit, and the provider stops
reading: the raw server counts what it managed to send before the connection closed."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from gleitzeit_jupyter.hub import ResourceFailed
from gleitzeit_jupyter.providers import _bounded
from gleitzeit_jupyter.providers.ollama import OllamaProvider, ResponseLimits
from gleitzeit_jupyter.providers.openai import OpenAIProvider

MiB = 1 << 20
LIMITS = ResponseLimits(line=MiB, body=MiB, embed=2 * MiB)
# An unbounded reader takes all of this; a bounded one stops after its limit plus what the
# kernel's socket buffers hold (tcp_rmem + tcp_wmem, at most a few tens of MiB here).
CAP = 256 * MiB
BOUND = 64 * MiB
PIECE = b"x" * (64 * 1024)

OLLAMA = {
    "/api/version": {"version": "0.12.0"},
    "/api/tags": {"models": [{"name": "m:latest", "model": "m:latest", "digest": "d1"}]},
    "/api/ps": {"models": []},
    "/api/show": {"capabilities": ["completion", "embedding"]},
    "/v1/models": {"object": "list", "data": [{"id": "m", "object": "model"}]},
}
CALLS = {"/api/generate", "/api/embed", "/v1/completions", "/v1/chat/completions"}


def _http(status: int, body: bytes, head: str = "Content-Type: application/json\r\n") -> bytes:
    return f"HTTP/1.1 {status} X\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


@dataclass
class Endless:
    """Answers a call with ``status`` and ``head``, then ``piece`` after ``piece``
    (``first`` before them), as chunks if ``chunked``, until ``CAP`` bytes or the client
    hangs up."""

    head: str
    first: bytes = b""
    chunked: bool = False
    piece: bytes = PIECE
    status: int = 200
    sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"HTTP/1.1 {self.status} X\r\n{self.head}\r\n".encode())
            data = self.first
            while self.sent < CAP:
                if self.chunked:
                    data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
                writer.write(data)
                await writer.drain()
                self.sent += len(data)
                data = self.piece
        finally:
            self.done.set()


async def _serve(
    answer: Callable[[asyncio.StreamWriter], Awaitable[None]], calls: set[str] = CALLS
) -> AsyncIterator[str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                path, length = line.split()[1].decode(), 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                await reader.readexactly(length)
                if path in OLLAMA and path not in calls:
                    writer.write(_http(200, json.dumps(OLLAMA[path]).encode()))
                    await writer.drain()
                elif path in calls:
                    await answer(writer)
                    return
                else:  # /health, /metrics: none here
                    writer.write(_http(404, b"not found", "Content-Type: text/plain\r\n"))
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _ollama(answer: Endless, method: str, stream: bool) -> ResourceFailed:
    params = (
        {"model": "m", "prompt": "hi"} if method != "llm/embed" else {"model": "m", "input": "a"}
    )
    async for url in _serve(answer):
        async with OllamaProvider(
            hosts=[url], auto_discover=False, retries=0, response_limits=LIMITS
        ) as p:
            with pytest.raises(ResourceFailed) as caught:
                if stream:
                    async for _ in p.stream(method, params):
                        pass
                else:
                    await p.execute(method, params)
            assert p.instances[0].breaker.consecutive_failures == 1  # the server's fault
            await asyncio.wait_for(answer.done.wait(), 60)  # guard only: the hang-up ends it
    return caught.value


async def _openai(answer: Endless, stream: bool) -> ResourceFailed:
    params = {"model": "m", "prompt": "hi"}
    async for url in _serve(answer):
        async with OpenAIProvider(hosts=[url + "/v1"], retries=0, response_limits=LIMITS) as p:
            with pytest.raises(ResourceFailed) as caught:
                if stream:
                    async for _ in p.stream("llm/generate", params):
                        pass
                else:
                    await p.execute("llm/generate", params)
            assert p.instances[0].breaker.consecutive_failures == 1
            await asyncio.wait_for(answer.done.wait(), 60)
    return caught.value


NDJSON = "Content-Type: application/x-ndjson\r\n"
JSON_ = "Content-Type: application/json\r\n"
SSE = "Content-Type: text/event-stream\r\n"


@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "chunked"])
async def test_an_endless_streamed_line_from_ollama_fails_at_the_line_limit(chunked) -> None:
    head = NDJSON + ("Transfer-Encoding: chunked\r\n" if chunked else "")
    answer = Endless(head, b'{"response": "', chunked)
    error = await _ollama(answer, "llm/generate", stream=True)
    assert "sent a line over the 1 MiB limit" in str(error)
    assert "127.0.0.1:" in str(error)
    assert answer.sent < BOUND


@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "chunked"])
async def test_an_endless_body_from_ollama_fails_at_the_body_limit(chunked) -> None:
    head = JSON_ + ("Transfer-Encoding: chunked\r\n" if chunked else "")
    answer = Endless(head, b'{"response": "', chunked)
    error = await _ollama(answer, "llm/generate", stream=False)
    assert "sent a body over the 1 MiB limit" in str(error)
    assert answer.sent < BOUND


async def test_an_embed_answer_has_its_own_larger_limit() -> None:
    answer = Endless(JSON_, b'{"embeddings": [[')
    error = await _ollama(answer, "llm/embed", stream=False)
    assert "sent a body over the 2 MiB limit" in str(error)
    assert answer.sent < BOUND


async def test_a_huge_content_length_fails_before_the_body_is_read() -> None:
    answer = Endless(JSON_ + f"Content-Length: {10 << 30}\r\n")
    error = await _ollama(answer, "llm/generate", stream=False)
    assert f"sent a body of {10 << 30} bytes over the 1 MiB limit" in str(error)
    assert answer.sent < BOUND


async def test_an_endless_error_page_on_a_stream_fails_at_the_body_limit() -> None:
    answer = Endless("Content-Type: text/html\r\n", b"<html>", status=500)
    error = await _ollama(answer, "llm/generate", stream=True)
    assert "sent a body over the 1 MiB limit" in str(error)
    assert answer.sent < BOUND


@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "chunked"])
async def test_an_endless_event_line_from_an_openai_server_fails_at_the_line_limit(
    chunked,
) -> None:
    head = SSE + ("Transfer-Encoding: chunked\r\n" if chunked else "")
    answer = Endless(head, b"data: ", chunked)
    error = await _openai(answer, stream=True)
    assert "sent a line over the 1 MiB limit" in str(error)
    assert answer.sent < BOUND


async def test_an_endless_event_of_short_data_lines_fails_at_the_line_limit() -> None:
    answer = Endless(SSE, piece=b"data: " + b"x" * 1000 + b"\n")
    error = await _openai(answer, stream=True)
    assert "sent an event over the 1 MiB limit" in str(error)
    assert answer.sent < BOUND


async def test_an_endless_body_from_an_openai_server_fails_at_the_body_limit() -> None:
    answer = Endless(JSON_ + "Transfer-Encoding: chunked\r\n", b"{", chunked=True)
    error = await _openai(answer, stream=False)
    assert "sent a body over the 1 MiB limit" in str(error)
    assert answer.sent < BOUND


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"a\n", b"a\r\nb\rc\n\nd", b"\r", b"a\r", b"\n\r\n\r"],
)
@pytest.mark.parametrize("step", [1, 2, 100])
async def test_lines_split_like_httpx(data: bytes, step: int) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(data), step):
            yield data[i : i + step]

    expected = [line async for line in httpx.Response(200, content=data).aiter_lines()]
    got = [line async for line in _bounded.lines(httpx.Response(200, content=pieces()), 10, "s")]
    assert got == expected


async def test_an_endless_model_list_fails_the_health_check_at_the_body_limit() -> None:
    answer = Endless(JSON_, b'{"models": [')
    async for url in _serve(answer, calls={"/api/tags"}):
        async with OllamaProvider(
            hosts=[url], auto_discover=False, retries=0, response_limits=LIMITS
        ) as p:
            why = p.health_error(p.instances[0].id)
            await asyncio.wait_for(answer.done.wait(), 60)
    assert why is not None and "sent a body over the 1 MiB limit" in why
    assert answer.sent < BOUND


async def test_a_compressed_answer_is_limited_after_decompression() -> None:
    bomb = gzip.compress(b"0" * (64 * MiB), compresslevel=9)  # about 64 KiB on the wire
    done = asyncio.Event()

    async def answer(writer: asyncio.StreamWriter) -> None:
        head = f"{JSON_}Content-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n"
        writer.write(f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + bomb)
        await writer.drain()
        done.set()

    async for url in _serve(answer):
        async with OllamaProvider(
            hosts=[url], auto_discover=False, retries=0, response_limits=LIMITS
        ) as p:
            with pytest.raises(ResourceFailed, match="sent a body over the 1 MiB limit"):
                await p.execute("llm/generate", {"model": "m", "prompt": "hi"})
            await asyncio.wait_for(done.wait(), 60)
    assert len(bomb) < LIMITS.body  # the limit counts what it inflates to, not the wire
