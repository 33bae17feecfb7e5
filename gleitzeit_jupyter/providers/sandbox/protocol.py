"""Length-prefixed JSON frames between the kernel and the in-container supervisor.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON (an object).
Only the supervisor writes frames to its channel; user code runs in forked workers whose
stdout/stderr are pipes the supervisor reads, so nothing a user prints can forge a frame.

Docker multiplexes a container's stdout and stderr on the attach stream (no tty) with an
8-byte header per chunk: ``[stream, 0, 0, 0, size:uint32 BE]``. :class:`DockerDemux` splits
that before frames are decoded.

This module is stdlib-only: the same source runs inside the container (see ``bootstrap``).
"""

from __future__ import annotations

import json
import struct
from typing import Any

__all__ = ["MAX_FRAME", "DockerDemux", "FrameDecoder", "ProtocolError", "encode_frame"]

#: Upper bound of one frame. Outputs are capped far below this; a larger length means a
#: corrupted stream, and we would rather fail the container than buffer without bound.
MAX_FRAME = 256 * 1024 * 1024
_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The byte stream is not a valid sequence of frames."""


# Bound once, when the module loads: inside the container that is before any user code, so a
# cell that replaces json.dumps (or json.JSONEncoder) does not change how its result is framed.
_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=True)
_loads = json.loads


def encode_frame(message: dict[str, Any]) -> bytes:
    body = _encoder.encode(message).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds the {MAX_FRAME} byte limit")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete messages.

    ``max_size`` bounds one frame, and so the memory a hostile sender can make us hold.
    """

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out: list[dict[str, Any]] = []
        while len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf, 0)
            if size > self.max_size:
                raise ProtocolError(f"frame length {size} exceeds the {self.max_size} limit")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            try:
                message = _loads(body)
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
                raise ProtocolError(f"frame is not JSON: {str(exc)[:200]}") from None
            if not isinstance(message, dict):
                raise ProtocolError("frame is not a JSON object")
            out.append(message)
        return out


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
