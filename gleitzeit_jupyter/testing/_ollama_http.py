"""A small HTTP/1.1 server on asyncio streams, just enough for the Ollama stand-in.

Why not ``http.server``: the stand-in must notice at once when a client hangs up in the middle
of a slow answer (the cancellation tests assert on it), keep connections alive for the pool
benchmarks, and stream chunked NDJSON. Asyncio streams give all three with the stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ClientGone", "HttpRequest", "HttpServer", "Responder"]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 64 * 1024 * 1024


class ClientGone(Exception):
    """The client closed its connection while we were still answering."""


@dataclass
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool = True

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}


@dataclass
class Responder:
    """Writes one response on a connection. A handler must call exactly one of ``send`` /
    ``send_json`` / ``start_stream`` (+ ``stream_line`` ... ``end_stream``) or ``reset``."""

    writer: asyncio.StreamWriter
    keep_alive: bool
    started: bool = False
    reset_done: bool = False
    extra_headers: list[tuple[str, str]] = field(default_factory=list)

    def _head(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers + self.extra_headers]
        lines.append(f"Date: {formatdate(usegmt=True)}")
        if not self.keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ClientGone
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError) as exc:
            raise ClientGone from exc

    async def send(self, status: int, body: bytes, content_type: str) -> None:
        self.started = True
        head = self._head(
            status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        await self._write(head + body)

    async def send_json(self, status: int, obj: Any) -> None:
        # Ollama (Go's gin) answers JSON with this exact content type.
        body = json.dumps(obj, separators=(",", ":")).encode()
        await self.send(status, body, "application/json; charset=utf-8")

    async def start_stream(self, status: int = 200) -> None:
        self.started = True
        head = self._head(
            status, [("Content-Type", "application/x-ndjson"), ("Transfer-Encoding", "chunked")]
        )
        await self._write(head)

    async def stream_line(self, obj: Any) -> None:
        line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        await self._write(b"%x\r\n%s\r\n" % (len(line), line))

    async def end_stream(self) -> None:
        await self._write(b"0\r\n\r\n")

    def reset(self) -> None:
        """Abort the connection with a TCP RST (what a crashed server looks like)."""
        self.reset_done = True
        abort_with_rst(self.writer)


def abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


Handler = Callable[[HttpRequest, Responder], Awaitable[None]]


class _Conn:
    """Buffered reader over one connection. A pump task reads ahead all the time, so a client
    hanging up is seen at once, even while a slow answer is being generated: the pump then
    cancels the task serving the connection (``busy``), as a real Ollama stops its runner."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buf = bytearray()
        self.eof = False
        self.busy: asyncio.Task[None] | None = None  # set while a handler runs
        self.hung_up_mid_request = False
        self._more = asyncio.Event()

    async def pump(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self.buf += data
                self._more.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self._more.set()
            if self.busy is not None:
                self.hung_up_mid_request = True
                self.busy.cancel()

    async def _fill(self) -> None:
        if not self.eof:
            self._more.clear()
            await self._more.wait()

    async def read_until(self, sep: bytes, limit: int) -> bytes | None:
        while True:
            idx = self.buf.find(sep)
            if idx >= 0:
                out = bytes(self.buf[: idx + len(sep)])
                del self.buf[: idx + len(sep)]
                return out
            if self.eof or len(self.buf) > limit:
                return None
            await self._fill()

    async def read_exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if self.eof:
                return None
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_request(self) -> HttpRequest | None:
        head = await self.read_until(b"\r\n\r\n", _MAX_HEADER_BYTES)
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size_line = await self.read_until(b"\r\n", 1024)
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0], 16)
                chunk = await self.read_exactly(size + 2)
                if chunk is None:
                    return None
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > _MAX_BODY_BYTES:
                return None
            got = await self.read_exactly(length)
            if got is None:
                return None
            body = got
        url = urlsplit(target)
        conn_hdr = headers.get("connection", "").lower()
        keep_alive = conn_hdr != "close" if version == "HTTP/1.1" else conn_hdr == "keep-alive"
        return HttpRequest(method.upper(), url.path, url.query, headers, body, keep_alive)


class HttpServer:
    """Listens on (host, port) and runs ``handler`` for every request.

    ``on_disconnect(request)`` is called when a client hangs up before its response is complete.
    ``down()`` closes the listener and aborts every open connection, like a killed process.
    """

    def __init__(
        self,
        handler: Handler,
        on_disconnect: Callable[[HttpRequest], None] | None = None,
    ) -> None:
        self.handler = handler
        self.on_disconnect = on_disconnect
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self.connections_total = 0

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    async def up(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, backlog=1024
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def down(self, *, reset: bool = True) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer, task in list(self._conns.items()):
            if reset:
                abort_with_rst(writer)
            else:
                writer.close()
            task.cancel()
        tasks = list(self._conns.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[writer] = task
        self.connections_total += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(reader)
        try:
            await self._serve_conn(conn, writer)
        except (asyncio.CancelledError, ConnectionError, ClientGone):
            pass
        finally:
            self._conns.pop(writer, None)
            if not writer.is_closing():
                writer.close()

    async def _serve_conn(self, conn: _Conn, writer: asyncio.StreamWriter) -> None:
        pump = asyncio.ensure_future(conn.pump())
        try:
            while True:
                try:
                    req = await conn.read_request()
                except (ValueError, UnicodeDecodeError):
                    return
                if req is None:
                    return
                resp = Responder(writer, req.keep_alive)
                conn.busy = asyncio.current_task()
                try:
                    await self.handler(req, resp)
                except asyncio.CancelledError:
                    if not conn.hung_up_mid_request:
                        raise  # the server is going down
                    self._disconnected(req)
                    return
                except ClientGone:
                    self._disconnected(req)
                    return
                except Exception as exc:
                    if not resp.started:
                        await resp.send_json(500, {"error": f"stand-in bug: {exc!r}"})
                    return
                finally:
                    conn.busy = None
                if resp.reset_done or not req.keep_alive or conn.eof:
                    return
        finally:
            pump.cancel()

    def _disconnected(self, req: HttpRequest) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect(req)
