"""The in-container supervisor: PID 1 of every sandbox container (stdlib only).

It speaks length-prefixed frames (``protocol``) on the container's stdin/stdout, which the
kernel reaches through docker's attach socket, and forks one worker per run from its own
pre-imported process, so a run starts in ~1 ms with numpy/pandas already loaded and never sees
a previous run's state. A session instead keeps one worker alive between runs (a remote REPL).

Why this layout is safe: the channel fds are dup'ed away from 0/1 and closed in workers, the
supervisor marks itself non-dumpable (so a worker of the same uid cannot open
``/proc/1/fd/*``), worker stdout/stderr are pipes read and capped here, and every frame on the
channel is written by this process. PID 1 of a pid namespace also ignores signals it has no
handler for, so user code cannot kill or interrupt it.

The channel is the kernel's unix socket when it is mounted here (``startup.direct_channel``),
else stdin/stdout. A message may carry attachments (``protocol``): a run's input values'
bytes, a result's returned values'; they are handed on without being decoded here.

Requests: ``run`` {id, code, inputs, returns, session, arrow, max_output, stream},
``interrupt``, ``kill``, ``reset``, ``ping``. Replies: ``hello``, ``result``, ``pong``,
``reset``, and for streaming runs ``chunk`` {id, stdout?, stderr?} before the result.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time
from typing import Any

try:  # on the host (tests, tooling) this is a normal package module
    from . import protocol
    from .endings import failed, from_worker
    from .finish import Finishing
    from .preload import SPARES, Preloading
    from .procs import Capture, ProcessHygiene, Worker, nondumpable, oom_kills
    from .relay import OutputRelay
    from .startup import direct_channel, seed_matplotlib_cache
    from .usage import cpu_ms, from_rusage, installed_versions
except ImportError:  # inside the container the bootstrap has installed these modules
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]
    from gleitzeit_endings import (  # type: ignore[import-not-found,no-redef]
        failed,
        from_worker,
    )
    from gleitzeit_finish import Finishing  # type: ignore[import-not-found,no-redef]
    from gleitzeit_preload import SPARES, Preloading  # type: ignore[import-not-found,no-redef]
    from gleitzeit_procs import (  # type: ignore[import-not-found,no-redef]
        Capture,
        ProcessHygiene,
        Worker,
        nondumpable,
        oom_kills,
    )
    from gleitzeit_relay import OutputRelay  # type: ignore[import-not-found,no-redef]
    from gleitzeit_startup import (  # type: ignore[import-not-found,no-redef]
        direct_channel,
        seed_matplotlib_cache,
    )
    from gleitzeit_sweep import runnable  # type: ignore[import-not-found,no-redef]
    from gleitzeit_usage import (  # type: ignore[import-not-found,no-redef]
        cpu_ms,
        from_rusage,
        installed_versions,
    )
else:
    from .sweep import runnable

MiB = 1024 * 1024


class Supervisor(Finishing, Preloading, OutputRelay, ProcessHygiene):
    def __init__(self) -> None:
        # Move the channel off fds 0/1 so a worker's stdio can never be the channel.
        direct = direct_channel()
        self.chan_in = os.dup(0) if direct is None else direct
        self.chan_out = os.dup(1) if direct is None else os.dup(direct)
        os.set_inheritable(self.chan_in, False)
        os.set_inheritable(self.chan_out, False)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(2, 1)
        os.close(null)
        # Root (with SETUID/SETGID/KILL only): every run gets a uid of its own, swept when
        # it ends (see sweep.py). Otherwise all runs share our uid, as on older setups.
        self.per_run_uids = os.getuid() == 0
        self.dirty: set[int] = set()
        self._next_uid = 0
        self.max_reply = protocol.MAX_FRAME
        self.decoder = protocol.FrameDecoder()
        self.session: Worker | None = None
        self.spares: list[Worker] = []  # pre-forked, each waiting for exactly one request
        self.worker: Worker | None = None  # the worker of the current run
        self.children: dict[int, Worker] = {}
        self.run: dict[str, Any] | None = None
        self.out = Capture(MiB)
        self.err = Capture(MiB)
        self.result: dict[str, Any] | None = None
        self.killed = False
        self.oom_before: int | None = None
        self.displayed: list[dict[str, Any] | None] = []
        self.displayed_bytes = 0
        self.dropped = 0
        self.phase = None
        self.max_outputs = 100
        self.max_outputs_bytes = 32 * MiB
        self.cpu_before: float | None = None
        self.started = 0.0
        self.exited: dict[int, int] = {}
        # Modules to import in the parent while idle (GLEITZEIT_PRELOAD up front, then what
        # runs use): every later run has them for free, at the price of a costlier fork.
        self.preload: list[str] = []
        self._want(os.environ.get("GLEITZEIT_PRELOAD", "").split(","))
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    # ---- channel -----------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(protocol.encode_frame(message))
        while data:
            data = data[os.write(self.chan_out, data) :]

    def hello(self) -> None:
        caps = {}
        for mod in ("numpy", "pandas", "matplotlib", "pyarrow"):
            caps[mod] = any(os.path.isdir(os.path.join(p, mod)) for p in sys.path if p)
        self.send(
            {
                "op": "hello",
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "caps": caps,
                "versions": installed_versions(("numpy", "pandas", "matplotlib", "pyarrow")),
            }
        )

    # ---- main loop ---------------------------------------------------------------------
    def serve(self) -> None:
        gc.freeze()  # see _idle_work: keep workers' GC off the parent's pages
        self.hello()
        while True:
            fds = [self.chan_in, self.wake_r]
            if self.worker is not None:
                fds += [
                    fd
                    for fd in (self.worker.res, self.worker.out, self.worker.err)
                    if fd is not None
                ]
            idle = self.run is None and bool(
                self._may_preload() or len(self.spares) < SPARES or self.dirty
            )
            ready, _, _ = select.select(fds, [], [], 0.02 if idle else 1.0)
            if not ready and idle:
                self._idle_work()
                continue
            for fd in ready:
                if fd == self.chan_in:
                    data = os.read(fd, 1 << 20)
                    if not data:  # the kernel went away: nothing left to serve
                        self._shutdown()
                        return
                    for message in self.decoder.feed(data):
                        self._guarded(self.handle, message)
                elif fd == self.wake_r:
                    try:
                        os.read(fd, 4096)
                    except BlockingIOError:
                        pass
                else:
                    self._guarded(self._read_worker, fd)
            self._guarded(self._flush_stream)
            self._guarded(self._reap)
            self._guarded(self._maybe_finish)
            # Between runs, once a child's exit woke us (before, the run just killed is
            # still exiting): clear what the last run left.
            if self.run is None and self.dirty and self.wake_r in ready:
                self._guarded(self._sweep_dirty)

    def _guarded(self, step: Any, *args: Any) -> None:
        """Run one step of the loop; a failure ends the current run, never the supervisor."""
        try:
            step(*args)
        except Exception as exc:
            sys.stderr.write(f"gleitzeit supervisor: {type(exc).__name__}: {exc}\n")
            if self.run is not None:
                if self.worker is not None:
                    self._kill_worker(self.worker)
                    self._forget(self.worker, wait=False)
                    self.worker = None
                try:
                    self._finish(failed("SandboxError", f"the run failed: {exc}"))
                except Exception:
                    self.run, self.worker = None, None

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ping":
            self.send(
                {
                    "op": "pong",
                    "id": msg.get("id"),
                    "busy": self.run is not None,
                    "session": self.session is not None,
                }
            )
        elif op == "run":
            self.start_run(msg)
        elif op == "interrupt":
            if self.worker is not None and self.run is not None:
                self._signal(self.worker.pid, signal.SIGINT)
        elif op == "kill":
            if self.worker is not None and self.run is not None:
                self.killed = True
                self._kill_worker(self.worker)
        elif op == "reset":
            if self.session is not None:
                self._kill_worker(self.session)
                self._forget(self.session)
            self.send({"op": "reset", "id": msg.get("id")})
        elif op == "exit":
            self._shutdown()
            sys.exit(0)

    # ---- runs --------------------------------------------------------------------------
    def start_run(self, msg: dict[str, Any]) -> None:
        if self.run is not None:
            self.send(
                {
                    "op": "result",
                    "id": msg.get("id"),
                    "exit_code": 1,
                    "error": {
                        "ename": "RuntimeError",
                        "evalue": "a run is in progress",
                        "traceback": "",
                    },
                }
            )
            return
        cap, stream = int(msg.get("max_output") or MiB), bool(msg.get("stream"))
        limits = msg.get("limits") if isinstance(msg.get("limits"), dict) else {}
        self.max_reply = int(limits.get("max_reply") or protocol.MAX_FRAME)
        # Nothing of an earlier run may be alive or left on disk when this one starts.
        self._settle_sweeps()
        self.run, self.out, self.err = msg, Capture(cap, stream), Capture(cap, stream)
        self.result, self.killed = None, False
        self.displayed, self.displayed_bytes, self.dropped = [], 0, 0
        self.phase: Any = None
        self.max_outputs = int(limits.get("max_outputs") or 100)
        self.max_outputs_bytes = int(limits.get("max_outputs_bytes") or 32 * MiB)
        self.oom_before = oom_kills()
        self.started = time.perf_counter()
        try:
            if msg.get("session"):
                if self.session is None:
                    self.session = self._fork(once=False)
                self.worker = self.session
            else:
                self.worker = self._spare()
        except OSError as exc:  # e.g. the pids limit, still full of a fork bomb's leftovers
            self.worker = None
            self._finish(
                {
                    "exit_code": 1,
                    "error": {
                        "ename": type(exc).__name__,
                        "evalue": f"cannot start a worker: {exc}",
                        "traceback": "",
                    },
                }
            )
            return
        assert self.worker.cmd is not None
        self.cpu_before = cpu_ms(self.worker.pid)
        self.worker.decoder = protocol.FrameDecoder(self.max_reply)
        attachments = msg.pop("attachments", None) or ()
        if attachments:  # dying before the worker says more: it was receiving them
            self.phase = "inputs"
        try:
            self._hand_over(self.worker, protocol.encode_message(msg, attachments))
        except OSError:
            pass  # the worker died already; _maybe_finish reports it
        except TimeoutError:  # stopped by its own earlier code (a session): it goes
            self._kill_worker(self.worker)

    def _hand_over(self, w: Worker, parts: list[Any]) -> None:
        """Write a request (and its values) to the worker's command pipe. The worker reads
        it at once unless user code stopped it, so a stall ends the handover, not us."""
        assert w.cmd is not None
        os.set_blocking(w.cmd, False)
        for part in parts:
            data = memoryview(part)
            while data:
                try:
                    data = data[os.write(w.cmd, data) :]
                except BlockingIOError:
                    _, ready, _ = select.select([], [w.cmd], [], 5.0)
                    if not ready and not (w.alive and runnable(w.pid)):
                        raise TimeoutError("the worker does not read its request") from None

    def _spare(self) -> Worker:
        """A pre-forked worker that can really run (not stopped or dead), else a new one."""
        while self.spares:
            w = self.spares.pop(0)
            if w.alive and runnable(w.pid):
                return w
            self._kill_worker(w)
            self._forget(w, wait=False)
        return self._fork(once=True)

    def _read_worker(self, fd: int) -> None:
        w = self.worker
        if w is None:
            return
        for name in ("out", "err", "res"):
            if getattr(w, name) == fd:
                self._consume(w, name)

    def _consume(self, w: Worker, name: str, most: int = 1 << 20) -> bool:
        """Read one chunk from a worker pipe; False when nothing more is there right now."""
        fd = getattr(w, name)
        try:
            data = os.read(fd, min(most, 1 << 20 if name == "res" else 1 << 16))
        except BlockingIOError:
            return False
        if not data:  # EOF: stop selecting on it (strays may hold other ends open)
            os.close(fd)
            setattr(w, name, None)
            return False
        if name == "out":
            self.out.add(data)
        elif name == "err":
            self.err.add(data)
        elif self.result is None:
            try:
                frames = w.decoder.feed(data)
            except protocol.ProtocolError as exc:
                # Garbage on the result pipe (user code wrote to it, or the result is too
                # large): this run fails, its worker goes, everything else carries on.
                self.result = failed("ProtocolError", f"the run's result is unusable: {exc}")
                self._kill_worker(w)
                return True
            for frame in frames:
                if self.result is not None:
                    break
                if frame.get("op") == "phase":
                    self.phase = frame.get("phase")
                elif frame.get("op") == "display":
                    self._display(w, frame.get("output"), frame.get("at"))
                else:
                    self.result = from_worker(frame, (self.run or {}).get("returns"))
        return True

    def _drain(self, w: Worker) -> None:
        for name in ("out", "err", "res"):
            while getattr(w, name) is not None and self._consume(w, name):
                pass

    def _reap(self) -> None:
        reaped_any = False
        while True:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            w = self.children.pop(pid, None)
            if w is None:
                continue  # a stray (orphans are re-parented to us, PID 1)
            reaped_any = True
            w.alive = False
            w.usage = from_rusage(ru)
            if w is self.worker:  # only the current run's status is ever read
                self.exited[pid] = status
            if w in self.spares:
                self.spares.remove(w)
                self._retire(w)
            elif w is self.session and w is not self.worker:
                self.session = None
                self._retire(w)
        if reaped_any and self.run is None and not self.per_run_uids:
            self._kill_strays()


def main() -> None:
    nondumpable()
    os.environ.setdefault("MPLCONFIGDIR", "/tmp/.matplotlib")
    seed_matplotlib_cache()
    Supervisor().serve()


if __name__ == "__main__":
    main()
