"""Process bookkeeping for the in-container supervisor (stdlib only)."""

from __future__ import annotations

import codecs
import os
import signal
import sys
import time

try:  # on the host this is a normal package module
    from . import protocol
    from .sweep import RUN_UIDS, become, kill_all, survivors, wipe
    from .worker import worker_main
except ImportError:  # inside the container the bootstrap has installed them
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]
    from gleitzeit_sweep import (  # type: ignore[import-not-found,no-redef]
        RUN_UIDS,
        become,
        kill_all,
        survivors,
        wipe,
    )
    from gleitzeit_worker import worker_main  # type: ignore[import-not-found,no-redef]

__all__ = ["Capture", "ProcessHygiene", "Worker", "nondumpable", "oom_kills"]

# How long a run's start may spend killing a process of an earlier run that is not dying
# before the container is given up (see _settle_sweeps).
SETTLE_LIMIT = 3.0


class Capture:
    """Keeps the first ``cap`` bytes of a stream and counts the rest.

    When the run streams, the kept bytes not yet sent wait in ``pending`` (decoded
    incrementally when taken, so a UTF-8 sequence split across reads is not mangled), and
    may be taken up to a byte offset: the place of an output displayed in between.
    """

    def __init__(self, cap: int, stream: bool = False) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.dropped = 0
        self.stream = stream
        self.pending = bytearray()
        self.sent = 0  # bytes of the stream already taken
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, data: bytes) -> None:
        room = self.cap - len(self.buf)
        kept = data[:room] if room > 0 else b""
        self.buf += kept
        self.dropped += len(data) - len(kept)
        if self.stream and kept:
            self.pending += kept

    @property
    def seen(self) -> int:
        """Bytes read from the stream so far, kept or not."""
        return len(self.buf) + self.dropped

    def take(self, final: bool = False, upto: int | None = None) -> str:
        """Text to stream now, all of it or up to byte ``upto`` of the stream (with the
        truncation marker once, at the end)."""
        n = len(self.pending) if upto is None else max(0, min(len(self.pending), upto - self.sent))
        data, self.pending = bytes(self.pending[:n]), self.pending[n:]
        self.sent += n
        out = self._decoder.decode(data)
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

    def __init__(
        self, pid: int, res: int, out: int, err: int, cmd: int | None, uid: int | None = None
    ) -> None:
        self.pid = pid
        self.uid = uid  # the run's own user (None: the supervisor's, when it is not root)
        # None once a pipe reached EOF (strays may keep the write end open after that).
        self.res: int | None = res
        self.out: int | None = out
        self.err: int | None = err
        self.cmd: int | None = cmd
        self.decoder = protocol.FrameDecoder()
        self.usage: tuple[float, float] | None = None  # (CPU ms, peak MiB) once reaped
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


def _prefer_oom_kill() -> None:
    # Be the OOM killer's first choice, never the supervisor.
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass


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
    per_run_uids: bool
    dirty: set[int]  # uids of finished workers not yet swept clean
    _next_uid: int

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

    def _take_uid(self) -> int | None:
        """A run uid that no live worker holds and that was swept clean."""
        if not self.per_run_uids:
            return None
        for _ in range(2):
            busy = {w.uid for w in self.children.values()} | self.dirty
            for step in range(len(RUN_UIDS)):
                uid = RUN_UIDS[(self._next_uid + step) % len(RUN_UIDS)]
                if uid not in busy:
                    self._next_uid += step + 1
                    return uid
            self._settle_sweeps()
        raise BlockingIOError("no free run uid")

    def _sweep_dirty(self) -> None:
        """Wipe the files of finished runs whose processes are all dead (killed at _retire)."""
        live, undying = survivors(self.dirty)
        for uid in undying:  # see _settle_sweeps
            kill_all(uid)
        for uid in self.dirty - live:
            wipe(uid)
            self.dirty.discard(uid)

    def _settle_sweeps(self) -> None:
        """Before a run starts: no earlier run's process may still act, nor its files remain.

        Every process of a finished run was killed when it ended (kill_all). A killed process
        stays listed until the scheduler lets it act on the signal, which on a busy host can
        take a while, but it never runs its own code again; waiting for that would add the
        teardown to this run's latency. So what is checked here is that each one left is
        dying (a SIGKILL pending, or exiting). One that is not is killed again until it is;
        if that keeps failing, nothing about this container can be trusted any more: the
        supervisor exits, which kills everything in it, and the pool replaces it.

        The files are wiped now, and once more when the last process is gone (a system
        call already under way at the kill may still have created one).
        """
        if not self.dirty:
            return
        live, undying = survivors(self.dirty)
        pause, waited = 0.001, 0.0
        while undying:
            if waited > SETTLE_LIMIT:
                self._abandon(f"processes of uids {sorted(undying)} survive SIGKILL")
            for uid in undying:
                kill_all(uid)
            # Between taking SIGKILL and starting to exit, a process shows neither; it is
            # seen dying once it got the CPU for a moment.
            time.sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.05)
            live, undying = survivors(self.dirty)
        for uid in list(self.dirty):
            wipe(uid)
            if uid not in live:
                self.dirty.discard(uid)

    def _abandon(self, why: str) -> None:
        """Fail safe: end this container (PID 1 exiting kills every process in it)."""
        sys.stderr.write(f"gleitzeit supervisor: {why}; giving up this container\n")
        sys.stderr.flush()
        os._exit(70)

    def _fork_once(self, once: bool) -> Worker:
        uid = self._take_uid()
        res_r, res_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        cmd_r, cmd_w = os.pipe()
        for fd in (res_w, cmd_w):
            _widen(fd)
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
                if uid is not None:
                    _prefer_oom_kill()  # while /proc/self is still ours to write
                    os.umask(0o077)
                    become(uid)
                worker_main(res_w, out_w, err_w, cmd_r, once)
            finally:
                os._exit(0)
        for fd in (res_w, out_w, err_w, cmd_r):
            os.close(fd)
        for fd in (res_r, out_r, err_r):
            os.set_blocking(fd, False)
        w = Worker(pid, res_r, out_r, err_r, cmd_w, uid)
        self.children[pid] = w
        return w

    def _retire(self, w: Worker) -> None:
        """The worker is done with: close its pipes and sweep away everything its uid left."""
        w.close()
        if w.uid is not None:
            kill_all(w.uid)
            self.dirty.add(w.uid)
            w.uid = None

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
        self._retire(w)
        if w is self.session:
            self.session = None

    def _kill_strays(self) -> None:
        """Kill processes a run left behind (fork bombs, daemons); keep our live workers."""
        if self.per_run_uids:  # every finished run's uid is swept instead
            self._settle_sweeps()
            return
        keep = {os.getpid()} | set(self.children)
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) not in keep:
                self._signal(int(p), signal.SIGKILL)

    def _shutdown(self) -> None:
        for w in list(self.children.values()):
            self._kill_worker(w)


def _widen(fd: int) -> None:
    """A 1 MiB pipe for values (the default 64 KiB costs a context switch per 64 KiB)."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (OSError, ImportError):
        pass  # a smaller pipe only costs speed
