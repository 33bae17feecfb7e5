"""Process bookkeeping for the in-container supervisor (stdlib only)."""

from __future__ import annotations

import codecs
import os

try:  # on the host this is a normal package module
    from . import protocol
except ImportError:  # inside the container the bootstrap has installed it
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]

__all__ = ["Capture", "Worker", "nondumpable", "oom_kills"]


class Capture:
    """Keeps the first ``cap`` bytes of a stream and counts the rest.

    When the run streams, the kept bytes not yet sent wait in ``pending`` (decoded
    incrementally, so a UTF-8 sequence split across reads is not mangled).
    """

    def __init__(self, cap: int, stream: bool = False) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.dropped = 0
        self.stream = stream
        self.pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, data: bytes) -> None:
        room = self.cap - len(self.buf)
        kept = data[:room] if room > 0 else b""
        self.buf += kept
        self.dropped += len(data) - len(kept)
        if self.stream and kept:
            self.pending += self._decoder.decode(kept)

    def take(self, final: bool = False) -> str:
        """Text to stream now (with the truncation marker once, at the end)."""
        out, self.pending = self.pending, ""
        if final:
            out += self._decoder.decode(b"", final=True) + self.marker()
        return out

    def marker(self) -> str:
        if not self.dropped:
            return ""
        return f"\n[gleitzeit: output truncated, {self.dropped} more bytes not shown]\n"

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace") + self.marker()


class Worker:
    """A forked worker process and the read ends of its pipes."""

    def __init__(self, pid: int, res: int, out: int, err: int, cmd: int | None) -> None:
        self.pid = pid
        # None once a pipe reached EOF (strays may keep the write end open after that).
        self.res: int | None = res
        self.out: int | None = out
        self.err: int | None = err
        self.cmd: int | None = cmd
        self.decoder = protocol.FrameDecoder()
        self.alive = True

    def close(self, keep: frozenset[int] = frozenset()) -> None:
        # Forget each fd as it is closed: its number is soon reused by new pipes, and a
        # second close() would then shut someone else's pipe.
        for name in ("res", "out", "err", "cmd"):
            fd = getattr(self, name)
            if fd is not None and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
            setattr(self, name, None)


def oom_kills() -> int | None:
    """The container's OOM-kill counter (cgroup v2 or v1), to tell OOM from other SIGKILLs."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            with open(path) as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except OSError:
            continue
    return None


def nondumpable() -> None:
    # PR_SET_DUMPABLE=0: /proc/1/* becomes root-owned, so same-uid workers cannot open our fds.
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass
