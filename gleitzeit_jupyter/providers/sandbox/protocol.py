"""Length-prefixed JSON frames between the kernel and the in-container supervisor.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object).
Big binary payloads (Arrow IPC streams, array buffers) travel as *attachments* of a message
instead of base64 text inside it: the message declares their sizes (``"attachments": [n, ...]``)
and is followed by each attachment's bytes in data chunks of at most :data:`CHUNK` bytes, each
with a 4-byte header whose top bit is set (``0x80000000 | size``). The decoder hands the
message on once its attachments are complete, with ``attachments`` replaced by the bytes.
Only the supervisor writes frames to its channel; user code runs in forked workers whose
stdout/stderr are pipes the supervisor reads, so nothing a user prints can forge a frame.

Docker multiplexes a container's stdout and stderr on the attach stream (no tty) with an
8-byte header per chunk: ``[stream, 0, 0, 0, size:uint32 BE]``. :class:`DockerDemux` splits
that before frames are decoded.

This module is stdlib-only: the same source runs inside the container (see ``bootstrap``).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

__all__ = [
    "CHUNK",
    "MAX_FRAME",
    "DockerDemux",
    "FrameDecoder",
    "ProtocolError",
    "encode_frame",
    "encode_message",
    "write_all",
]

#: Upper bound of one frame (with its attachments). Outputs are capped far below this; a larger
#: length means a corrupted stream, and we would rather fail the container than buffer without
#: bound.
MAX_FRAME = 256 * 1024 * 1024
#: Largest data chunk of an attachment.
CHUNK = 1024 * 1024
#: Most attachments one message may declare.
MAX_ATTACHMENTS = 4096
_LEN = struct.Struct(">I")
_DATA = 0x80000000


class ProtocolError(Exception):
    """The byte stream is not a valid sequence of frames."""


# Bound once, when the module loads: inside the container that is before any user code, so a
# cell that replaces json.dumps (or json.JSONEncoder) does not change how its result is framed.
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_loads = json.loads
_write = os.write


def encode_frame(message: dict[str, Any]) -> bytes:
    body = _encoder.encode(message).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME} byte limit")
    return _LEN.pack(len(body)) + body


def encode_message(message: dict[str, Any], attachments: Any = ()) -> list[Any]:
    """The buffers of ``message`` followed by its ``attachments`` (bytes-like objects), in
    the order they are written; attachments are sliced, not copied."""
    if not attachments:
        return [encode_frame(message)]
    views = [memoryview(a).cast("B") for a in attachments]
    if sum(len(v) for v in views) > MAX_FRAME:
        raise ProtocolError(f"attachments exceed the {MAX_FRAME} byte limit")
    frame = encode_frame({**message, "attachments": [len(v) for v in views]})
    # The receiver counts the message and its attachments together (FrameDecoder).
    total = len(frame) - 4 + sum(len(v) for v in views)
    if total > MAX_FRAME:
        raise ProtocolError(f"a message of {total} bytes exceeds the {MAX_FRAME} byte limit")
    parts: list[Any] = [frame]
    for view in views:
        for at in range(0, len(view), CHUNK):
            piece = view[at : at + CHUNK]
            parts.append(_LEN.pack(_DATA | len(piece)))
            parts.append(piece)
    return parts


def write_all(fd: int, parts: list[Any], write: Any = None) -> None:
    """Write every buffer of ``parts`` to the blocking descriptor ``fd``."""
    write = write or _write
    for part in parts:
        data = memoryview(part)
        while data:
            data = data[write(fd, data) :]


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete messages (attachments included).

    ``max_size`` bounds one message with its attachments, and so the memory a hostile
    sender can make us hold; attachment bytes are only held as they arrive, never reserved
    on a sender's word.
    """

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self._buf = bytearray()  # a header or JSON body being assembled
        self._body: int | None = None  # length of the JSON body under way
        self._left = 0  # bytes still to come of the current data chunk
        self._pending: dict[str, Any] | None = None  # a message awaiting its attachments
        self._sizes: list[int] = []
        self._parts: list[bytearray] = []
        self.max_size = max_size

    def feed(self, data: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        while True:
            if self._left:  # inside a data chunk: straight into its attachment
                take = min(self._left, end - pos)
                if not take:
                    break
                self._parts[-1] += view[pos : pos + take]
                pos += take
                self._left -= take
                if not self._left:
                    self._advance(out)
                continue
            need = (4 if self._body is None else self._body) - len(self._buf)
            take = min(need, end - pos)
            if take:
                self._buf += view[pos : pos + take]
                pos += take
            if take < need:
                break
            if self._body is None:
                self._header(_LEN.unpack(self._buf)[0])
            else:
                body, self._body = bytes(self._buf), None
                self._accept(_parse(body), out, len(body))
            self._buf.clear()
        return out

    def _header(self, word: int) -> None:
        if word & _DATA:
            size = word & ~_DATA
            if self._pending is None:
                raise ProtocolError("a data chunk outside an attachment")
            room = self._sizes[len(self._parts) - 1] - len(self._parts[-1])
            if not 0 < size <= min(CHUNK, room):
                raise ProtocolError(f"a data chunk of {size} bytes where {room} were due")
            self._left = size
            return
        if self._pending is not None:
            raise ProtocolError("a message inside an unfinished attachment")
        if word > self.max_size:
            raise ProtocolError(f"frame length {word} exceeds the {self.max_size} limit")
        self._body = word

    def _accept(self, message: dict[str, Any], out: list[dict[str, Any]], body: int) -> None:
        sizes = message.get("attachments")
        if sizes is None:
            out.append(message)
            return
        if (
            not isinstance(sizes, list)
            or len(sizes) > MAX_ATTACHMENTS
            or not all(type(n) is int and n >= 0 for n in sizes)
        ):
            raise ProtocolError("malformed attachment sizes")
        if body + sum(sizes) > self.max_size:
            raise ProtocolError(
                f"a message of {body + sum(sizes)} bytes exceeds the {self.max_size} limit"
            )
        self._pending, self._sizes, self._parts = message, sizes, []
        self._advance(out)

    def _advance(self, out: list[dict[str, Any]]) -> None:
        """Move past complete attachments; hand the message on once all are there."""
        assert self._pending is not None
        while len(self._parts) < len(self._sizes):
            if self._parts and len(self._parts[-1]) < self._sizes[len(self._parts) - 1]:
                return
            self._parts.append(bytearray())
        if self._parts and len(self._parts[-1]) < self._sizes[-1]:
            return
        self._pending["attachments"] = self._parts
        out.append(self._pending)
        self._pending, self._sizes, self._parts = None, [], []


def _parse(body: bytes) -> dict[str, Any]:
    try:
        message = _loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ProtocolError(f"frame is not JSON: {str(exc)[:200]}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


class DockerDemux:
    """Split docker's multiplexed attach stream into (stream id, bytes) chunks.

    Stream 1 is stdout, 2 is stderr. Chunk boundaries of the socket and of docker's headers
    are unrelated, so partial headers and payloads are buffered.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while len(self._buf) >= 8:
            stream = self._buf[0]
            (size,) = _LEN.unpack_from(self._buf, 4)
            if stream not in (0, 1, 2) or self._buf[1:4] != b"\0\0\0":
                raise ProtocolError("bad docker stream header (is the container using a tty?)")
            if size > MAX_FRAME:
                raise ProtocolError(f"docker stream chunk of {size} bytes exceeds the limit")
            if len(self._buf) < 8 + size:
                break
            out.append((stream, bytes(self._buf[8 : 8 + size])))
            del self._buf[: 8 + size]
        return out
