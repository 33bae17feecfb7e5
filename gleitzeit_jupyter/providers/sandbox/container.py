"""The kernel's end of one sandbox container: an asyncio channel to its supervisor.

Frames go to the supervisor's stdin and come back on docker's multiplexed attach stream, read
by one reader task that resolves futures by request id. On a real socket (unix/tcp engines)
asyncio reads it directly; other transports (ssh) are read by a thread that feeds the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import docker.errors

from .channel import ChannelListener, is_local
from .engine import ContainerSpec, Engine
from .protocol import CHUNK, DockerDemux, FrameDecoder, ProtocolError, encode_message

__all__ = ["ContainerDied", "SandboxContainer", "SupervisorUnresponsive"]


class ContainerDied(Exception):
    """The container or its supervisor went away (killed, OOM, engine gone).

    ``sent`` is False when the container was found dead before the request was written, so
    the request provably never reached it.
    """

    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.sent = sent


class SupervisorUnresponsive(Exception):
    """The supervisor did not answer in time, even to a kill."""


class SandboxContainer:
    def __init__(self, engine: Engine, cid: str, sock: Any, max_frame: int | None = None) -> None:
        self.engine = engine
        self.max_frame = max_frame
        self.id = cid
        self._sock = sock  # keeps the SDK's response (and so the connection) alive
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._chunks: dict[Any, Callable[[dict[str, Any]], None]] = {}
        self._settling: asyncio.Task[dict[str, Any] | None] | None = None
        self._hello: asyncio.Future[dict[str, Any]] | None = None
        self._stderr: deque[bytes] = deque(maxlen=32)
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._raw: socket.socket | None = None
        # The direct channel (channel.py), once the supervisor connected: preferred for frames.
        self._direct: asyncio.StreamWriter | None = None
        self._direct_reader: asyncio.Task[None] | None = None
        self._sending = asyncio.Lock()  # one message (and its attachments) at a time
        self.dead: str | None = None  # why, once the channel is gone
        self.hello: dict[str, Any] = {}
        self.runs = 0
        self.started_at = time.monotonic()

    @classmethod
    async def start(
        cls,
        engine: Engine,
        spec: ContainerSpec,
        *,
        ready_timeout: float = 60.0,
        max_frame: int | None = None,
        direct: bool = True,
    ) -> SandboxContainer:
        """Create and start a container and wait for its supervisor's hello. ``direct``: talk
        over a unix socket where the engine is local (see channel.py)."""
        listener = None
        if direct and is_local(engine.base_url):
            try:
                listener = ChannelListener()
            except OSError:
                listener = None  # the attach stream carries everything
        plain = spec
        if listener is not None:
            spec = dataclasses.replace(
                spec,
                environment={**spec.environment, **listener.environment()},
                binds={**spec.binds, **listener.binds()},
            )
        try:
            try:
                cid, sock = await engine.call(engine.create, spec)
            except docker.errors.APIError:
                if listener is None:
                    raise
                # An engine that cannot mount host paths (a VM's, say): the attach stream only.
                listener.close()
                listener = None
                cid, sock = await engine.call(engine.create, plain)
            self = cls(engine, cid, sock, max_frame)
            accepting = None
            try:
                await self._open()
                if listener is not None:
                    accepting = asyncio.create_task(self._accept(listener))
                assert self._hello is not None
                self.hello = await asyncio.wait_for(self._hello, ready_timeout)
            except BaseException:
                await self.close()
                raise
            finally:
                if accepting is not None and not accepting.done():
                    accepting.cancel()  # hello came on the attach stream: no direct channel
        finally:
            if listener is not None:
                listener.close()
        return self

    async def _accept(self, listener: ChannelListener) -> None:
        conn = await listener.accept()
        reader, self._direct = await asyncio.open_connection(sock=conn, limit=CHUNK)
        self._direct_reader = asyncio.create_task(self._read_direct(reader))

    async def _read_direct(self, reader: asyncio.StreamReader) -> None:
        frames = FrameDecoder() if self.max_frame is None else FrameDecoder(self.max_frame)
        try:
            while data := await reader.read(CHUNK):
                for message in frames.feed(data):
                    self._dispatch(message)
            self._fail("the container's channel closed (container stopped or killed)")
        except Exception as exc:  # a malformed channel: this container is not trusted again
            self._fail(f"channel error: {exc}")

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        raw = getattr(self._sock, "_sock", self._sock)
        if isinstance(raw, socket.socket):
            self._raw = raw
            reader, self._writer = await asyncio.open_connection(sock=raw, limit=CHUNK)
            self._reader = asyncio.create_task(self._read_stream(reader))
        else:  # paramiko channel or similar: a thread does the blocking reads
            queue: asyncio.Queue[bytes] = asyncio.Queue()

            def pump() -> None:
                while True:
                    try:
                        data = raw.recv(1 << 16)
                    except Exception:
                        data = b""
                    loop.call_soon_threadsafe(queue.put_nowait, data)
                    if not data:
                        return

            threading.Thread(target=pump, daemon=True, name=f"sandbox-{self.id[:12]}").start()
            self._reader = asyncio.create_task(self._read_queue(queue))

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(CHUNK):
                self._feed(data)
            self._fail("the container's channel closed (container stopped or killed)")
        except Exception as exc:  # a malformed channel: this container is not trusted again
            self._fail(f"channel error: {exc}")

    async def _read_queue(self, queue: asyncio.Queue[bytes]) -> None:
        try:
            while data := await queue.get():
                self._feed(data)
            self._fail("the container's channel closed (container stopped or killed)")
        except Exception as exc:
            self._fail(f"channel error: {exc}")

    _demux: DockerDemux | None = None
    _frames: FrameDecoder | None = None

    def _feed(self, data: bytes) -> None:
        if self._demux is None:
            frames = FrameDecoder() if self.max_frame is None else FrameDecoder(self.max_frame)
            self._demux, self._frames = DockerDemux(), frames
        assert self._frames is not None
        for stream, chunk in self._demux.feed(data):
            if stream == 2:  # the supervisor's own stderr: kept for diagnostics only
                self._stderr.append(chunk[-2048:])
                continue
            for message in self._frames.feed(chunk):
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        rid = message.get("id")
        if rid is not None and type(rid) is not int:
            raise ProtocolError("a reply with a malformed id")
        if message.get("op") == "hello":
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(message)
            return
        if message.get("op") == "chunk":
            handler = self._chunks.get(message.get("id"))
            if handler is not None:
                handler(message)
            return
        fut = self._pending.pop(message.get("id"), None)
        if fut is not None and not fut.done():
            fut.set_result(message)

    def _fail(self, reason: str) -> None:
        if self.dead is None:
            self.dead = reason
        err = ContainerDied(self.dead)
        for fut in [*self._pending.values(), *([self._hello] if self._hello else [])]:
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()

    @property
    def direct(self) -> bool:
        """Whether frames travel over the direct channel (else docker's attach stream)."""
        return self._direct is not None

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")[-2048:]

    # ---- requests ----------------------------------------------------------------------
    async def _send(self, message: dict[str, Any], attachments: Any = ()) -> None:
        if self.dead is not None:
            raise ContainerDied(self.dead, sent=False)
        parts = encode_message(message, attachments)
        try:
            async with self._sending:
                writer = self._direct or self._writer
                for part in parts:
                    if writer is not None:
                        writer.write(part)
                        await writer.drain()  # a chunk at a time: no second copy here
                    else:
                        await self.engine.call(self._sock.sendall, part)
        except (OSError, RuntimeError) as exc:
            self._fail(f"cannot write to the container: {exc}")
            raise ContainerDied(self.dead or str(exc)) from None

    async def request(
        self, message: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._send({**message, "id": rid})
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            self._pending.pop(rid, None)

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            reply = await self.request({"op": "ping"}, timeout)
        except (TimeoutError, ContainerDied):
            return False
        return reply.get("op") == "pong"

    async def run(
        self,
        message: dict[str, Any],
        timeout: float,
        grace: float = 1.0,
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
        attachments: Any = (),
    ) -> tuple[dict[str, Any], bool]:
        """Run code; past ``timeout`` interrupt, then kill the worker, then give up.

        Returns the supervisor's result and whether this host's deadline stopped the run
        (observed here, never read from the reply), or raises :class:`ContainerDied` /
        :class:`SupervisorUnresponsive`. With ``on_chunk``
        the run streams: output arrives as ``{"stdout"|"stderr": text}`` while it runs.
        """
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        if on_chunk is not None:
            self._chunks[rid] = on_chunk
        self.runs += 1
        try:
            await self._send(
                {**message, "op": "run", "id": rid, "stream": on_chunk is not None}, attachments
            )
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout), False
            except TimeoutError:
                pass
            result = await self._stop(fut, grace)
            if result is None:
                raise SupervisorUnresponsive(
                    f"supervisor of {self.id[:12]} did not answer {grace:g} s after a kill"
                )
            return result, True
        except asyncio.CancelledError:
            # The caller gave up (Ctrl-C in the notebook, a hub deadline, a stream closed):
            # stop the worker in the background; settle() lets the next call wait for it.
            if not fut.done():
                self._settling = asyncio.create_task(self._stop(fut, grace))
                # the result must still find its future when it arrives
                self._settling.add_done_callback(lambda _: self._pending.pop(rid, None))
            raise
        finally:
            if self._settling is None or self._settling.done():
                self._pending.pop(rid, None)
            self._chunks.pop(rid, None)

    async def _stop(
        self, fut: asyncio.Future[dict[str, Any]], grace: float
    ) -> dict[str, Any] | None:
        """Interrupt (KeyboardInterrupt lets finally blocks run and keeps a session's
        namespace), then SIGKILL; the run's result, or None if the supervisor is silent."""
        for op in ("interrupt", "kill"):
            try:
                await self._send({"op": op})
                return await asyncio.wait_for(asyncio.shield(fut), grace)
            except TimeoutError:
                continue
            except ContainerDied:
                return None
        return None

    async def settle(self) -> dict[str, Any] | bool | None:
        """Wait for a run abandoned by its caller to end. True: nothing was pending; its
        result once it ended; None: the supervisor did not stop it (replace the container)."""
        task, self._settling = self._settling, None
        if task is None:
            return True
        return await task

    async def reset(self, timeout: float = 5.0) -> None:
        await self.request({"op": "reset"}, timeout)

    async def close(self) -> None:
        """Kill and remove the container and drop the channel (idempotent)."""
        self._fail("the container was closed")
        if self._direct is not None:
            self._direct.close()
        if self._direct_reader is not None:
            self._direct_reader.cancel()
        if self._writer is not None:
            self._writer.close()
        elif self._sock is not None:
            try:
                self._sock.close()
            except Exception:
                pass
        if self._reader is not None:
            self._reader.cancel()
        try:
            await self.engine.call(self.engine.remove, self.id)
        except Exception:
            pass  # auto_remove or a gone engine: nothing more we can do
