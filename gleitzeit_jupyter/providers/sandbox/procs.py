"""Process bookkeeping for the in-container supervisor (stdlib only)."""

from __future__ import annotations

import codecs
import os
import signal
import time

try:  # on the host this is a normal package module
    from . import protocol
    from .worker import worker_main
except ImportError:  # inside the container the bootstrap has installed them
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]
    from gleitzeit_worker import worker_main  # type: ignore[import-not-found,no-redef]

__all__ = ["Capture", "ProcessHygiene", "Worker", "nondumpable", "oom_kills"]


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


class ProcessHygiene:
    """Forking, killing and reaping for the supervisor (a mixin: it owns the state)."""

    chan_in: int
    chan_out: int
    wake_r: int
    wake_w: int
    children: dict[int, Worker]
    session: Worker | None

    def _reap(self) -> None:  # provided by the supervisor
        raise NotImplementedError

    def _fork(self, *, once: bool) -> Worker:
        for attempt in range(50):
            try:
                return self._fork_once(once)
            except BlockingIOError:  # EAGAIN: pids limit; strays are being killed
                self._kill_strays()
                time.sleep(0.01 * (attempt + 1))
                self._reap()
        return self._fork_once(once)

    def _fork_once(self, once: bool) -> Worker:
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (res_r, res_w, out_r, out_w, err_r, err_w, cmd_r, cmd_w):
                os.close(fd)
            raise
        if pid == 0:  # the worker: never returns
            try:
                for fd in (
                    self.chan_in,
                    self.chan_out,
                    self.wake_r,
                    self.wake_w,
                    res_r,
                    out_r,
                    err_r,
                    cmd_w,
                ):
                    os.close(fd)
                mine = frozenset((res_w, out_w, err_w, cmd_r))
                for w in self.children.values():
                    w.close(keep=mine)
                worker_main(res_w, out_w, err_w, cmd_r, once)
            finally:
                os._exit(0)
        for fd in (res_w, out_w, err_w, cmd_r):
            os.close(fd)
        for fd in (res_r, out_r, err_r):
            os.set_blocking(fd, False)
        w = Worker(pid, res_r, out_r, err_r, cmd_w)
        self.children[pid] = w
        return w

    def _signal(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill_worker(self, w: Worker) -> None:
        # Tearing a process down costs CPU; at the lowest priority that work yields to the
        # next run instead of delaying it (raising one's own children's nice needs no caps).
        try:
            os.setpriority(os.PRIO_PGRP, w.pid, 19)
        except OSError:
            pass
        # The worker leads its own process group: this also takes its children.
        try:
            os.killpg(w.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._signal(w.pid, signal.SIGKILL)

    def _forget(self, w: Worker, wait: bool = True) -> None:
        if w.alive and wait:
            try:
                os.waitpid(w.pid, 0)
                self.children.pop(w.pid, None)
                w.alive = False
            except ChildProcessError:
                pass
        w.close()
        if w is self.session:
            self.session = None

    def _kill_strays(self) -> None:
        """Kill processes a run left behind (fork bombs, daemons); keep our live workers."""
        keep = {os.getpid()} | set(self.children)
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) not in keep:
                self._signal(int(p), signal.SIGKILL)

    def _shutdown(self) -> None:
        for w in list(self.children.values()):
            self._kill_worker(w)
