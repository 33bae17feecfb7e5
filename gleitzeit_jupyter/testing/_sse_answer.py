"""A ``text/event-stream`` answer as the OpenAI stand-in writes it: chunked transfer
encoding, one ``data:`` event per chunk."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

from ._ollama_http import ClientGone, Responder

__all__ = ["SseAnswer"]


class SseAnswer:
    """A ``text/event-stream`` answer, chunked, on the responder's connection."""

    def __init__(self, resp: Responder) -> None:
        self.writer = resp.writer
        resp.started = True

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ClientGone
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ClientGone from exc

    async def start(self) -> None:
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            f"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
            f"Date: {formatdate(usegmt=True)}\r\n\r\n"
        )
        await self._write(head.encode("latin-1"))

    async def event(self, data: Any) -> None:
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        frame = f"data: {text}\n\n".encode()
        await self._write(b"%x\r\n%s\r\n" % (len(frame), frame))

    async def end(self) -> None:
        await self._write(b"0\r\n\r\n")
