"""Server-sent events as OpenAI-compatible servers stream them: reading the events out of a
response's lines, and waiting for the first one within the first-token timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

import httpx

from ..hub import ExecutionTimeout, ResourceFailed
from . import _bounded
from ._bounded import too_large

__all__ = ["Event", "first_event", "server_events"]

Event = tuple[str, str]  # (event type, data)


async def first_event(
    client: httpx.AsyncClient,
    request: httpx.Request,
    timeout: float | None,
    ident: str,
    max_line: int,
) -> tuple[httpx.Response, AsyncIterator[Event] | None, Event | None]:
    """Send a streaming request; read up to its first server-sent event within ``timeout``.
    Returns the event iterator too (it can be read once); none for a status other than 200.
    No line or event may be longer than ``max_line`` bytes."""

    async def go() -> tuple[httpx.Response, AsyncIterator[Event] | None, Event | None]:
        resp = await client.send(request, stream=True)
        try:
            if resp.status_code != 200:
                return resp, None, None
            kind = resp.headers.get("content-type", "")
            if "text/event-stream" not in kind:
                raise ResourceFailed(
                    f"{ident} answered a streamed call with {kind or 'no Content-Type'},"
                    " not server-sent events",
                    instance=ident,
                )
            events = server_events(_bounded.lines(resp, max_line, ident), max_line, ident)
            return resp, events, await anext(events, None)
        except BaseException:
            await resp.aclose()
            raise

    if timeout is None:
        return await go()
    try:
        async with asyncio.timeout(timeout):
            return await go()
    except TimeoutError:
        raise ExecutionTimeout(
            f"no first token from {ident} within {timeout:g} s", instance=ident
        ) from None


async def server_events(lines: AsyncIterable[str], limit: int, ident: str) -> AsyncIterator[Event]:
    """(event type, data) of each server-sent event in ``lines`` (the WHATWG algorithm:
    ``data`` lines joined by newlines, comments and unknown fields skipped, an event without
    its closing blank line dropped). llama.cpp's nonstandard ``error: {...}`` line, which
    other SSE readers drop, comes out as an ``error`` event so its message is not lost.
    An event's data over ``limit`` characters fails the call: ``ident`` sent it."""
    kind, data, size = "", [], 0
    async for line in lines:
        if not line:
            if data:
                yield kind or "message", "\n".join(data)
            kind, data, size = "", [], 0
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            size += len(value) + 1
            if size > limit:
                raise too_large(ident, "an event", limit)
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "error":
            kind, data = "error", [value]
