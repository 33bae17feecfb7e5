"""Process bookkeeping for the in-container supervisor (stdlib only)."""

from __future__ import annotations

import os

try:  # on the host this is a normal package module
    from . import protocol
except ImportError:  # inside the container the bootstrap has installed it
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]

__all__ = ["Capture", "Worker", "nondumpable", "oom_kills"]


class Capture:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.cap - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        self.dropped += max(0, len(data) - max(room, 0))

    def text(self) -> str:
        out = self.buf.decode("utf-8", errors="replace")
        if self.dropped:
            out += f"\n[gleitzeit: output truncated, {self.dropped} more bytes not shown]\n"
        return out


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
