"""Reading an LLM server's answer with a size limit, enforced while it arrives.

httpx reads a body or a line whole, however long: a broken or hostile server sending an
endless line or body would fill the kernel's memory. Here nothing is buffered past the
limit; going over it fails the call with a ResourceFailed naming the server and the limit
(the server's fault: it counts for the breaker like any other bad answer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..hub import ResourceFailed

__all__ = ["MiB", "ResponseLimits", "lines", "read", "request", "too_large"]

MiB = 1 << 20


@dataclass(frozen=True)
class ResponseLimits:
    """Largest answer accepted from a server, in bytes (after decompression).

    ``line``: one streamed line (an NDJSON object, a server-sent-event line) and one
    server-sent event. ``body``: a whole non-streamed answer (a completion, a model list, an
    error page). ``embed``: a non-streamed ``llm/embed`` answer; 256 MiB holds about 5,000
    embeddings of 4,096 dimensions (about 12 bytes a number in JSON).
    """

    line: int = 16 * MiB
    body: int = 64 * MiB
    embed: int = 256 * MiB


def too_large(ident: str, what: str, limit: int) -> ResourceFailed:
    """The error for ``what`` (say "a line") from ``ident`` being over ``limit`` bytes."""
    return ResourceFailed(
        f"{ident} sent {what} over the {_size(limit)} limit; the answer was dropped",
        instance=ident,
        hint="a broken server, or raise response_limits on the provider",
    )


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n} bytes"


async def read(
    resp: httpx.Response, limit: int, ident: str, request: httpx.Request | None = None
) -> httpx.Response:
    """Read ``resp`` (sent with ``stream=True``) up to ``limit`` bytes: ``resp`` itself, or
    for a compressed answer (counted after decompression) a read copy of it.

    A Content-Length over the limit fails before any of the body is read. The caller still
    closes ``resp``. ``request``: the request, for an answer straight from a transport
    (which has none set).
    """
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(ident, f"a body of {declared} bytes", limit)
    if "content-encoding" not in resp.headers:
        # Not compressed: the bytes on the wire are the body, so capping the stream under
        # httpx's own read is enough, and costs no copy (this is every call's hot path).
        resp.stream = _Capped(resp.stream, limit, ident)  # type: ignore[arg-type]
        await resp.aread()
        return resp
    body = bytearray()
    async for chunk in resp.aiter_bytes():
        if len(body) + len(chunk) > limit:
            raise too_large(ident, "a body", limit)
        body += chunk
    # The body is decoded already: a copy that says it is compressed would decode it again.
    headers = [(k, v) for k, v in resp.headers.multi_items() if k.lower() != "content-encoding"]
    return httpx.Response(
        resp.status_code,
        headers=headers,
        content=bytes(body),
        request=request if request is not None else resp.request,
        extensions=resp.extensions,
    )


class _Capped(httpx.AsyncByteStream):
    """A response stream that fails once more than ``limit`` bytes came through."""

    def __init__(self, stream: httpx.AsyncByteStream, limit: int, ident: str) -> None:
        self._stream, self._limit, self._ident = stream, limit, ident

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._stream:
            seen += len(chunk)
            if seen > self._limit:
                raise too_large(self._ident, "a body", self._limit)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()


async def request(
    client: httpx.AsyncClient, method: str, url: str | httpx.URL, limit: int, ident: str,
    **kwargs: Any,
) -> httpx.Response:  # fmt: skip
    """``client.request`` with the answer read up to ``limit`` bytes."""
    async with client.stream(method, url, **kwargs) as resp:
        return await read(resp, limit, ident)


async def lines(resp: httpx.Response, limit: int, ident: str) -> AsyncIterator[str]:
    """The lines of ``resp`` as ``Response.aiter_lines`` splits them (at ``\\n``, ``\\r\\n``
    or ``\\r``, without the line break), none longer than ``limit`` bytes."""
    pending = bytearray()
    seen = 0  # bytes of ``pending`` already searched for a line break
    async for chunk in resp.aiter_bytes():
        pending += chunk
        start = 0
        while True:
            cr, lf = pending.find(b"\r", seen), pending.find(b"\n", seen)
            end = min(i for i in (cr, lf) if i >= 0) if cr >= 0 or lf >= 0 else -1
            if end < 0 or (end == cr and end == len(pending) - 1):
                # no break yet, or a \r that may be the first half of \r\n
                seen = len(pending) if end < 0 else end
                break
            yield pending[start:end].decode("utf-8", "replace")
            start = end + (2 if end == cr and pending[end + 1 : end + 2] == b"\n" else 1)
            seen = start
        del pending[:start]
        seen -= start
        if len(pending) > limit:
            raise too_large(ident, "a line", limit)
    if pending:  # the last line, without a break after it (or with a lone \r)
        yield pending.removesuffix(b"\r").decode("utf-8", "replace")
