"""Ending a run (stdlib only; a mixin of the in-container supervisor): the reply built from
the worker's report and what the supervisor observed itself, measured against the reply cap,
and sent with its values' attachments."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

try:  # on the host (tests, tooling) this is a normal package module
    from . import protocol
    from .endings import died, failed
    from .preload import SPARES
    from .procs import Capture, Worker, oom_kills
except ImportError:  # inside the container the bootstrap has installed these modules
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]
    from gleitzeit_endings import died, failed  # type: ignore[import-not-found,no-redef]
    from gleitzeit_preload import SPARES  # type: ignore[import-not-found,no-redef]
    from gleitzeit_procs import (  # type: ignore[import-not-found,no-redef]
        Capture,
        Worker,
        oom_kills,
    )

__all__ = ["Finishing"]


class Finishing:
    """Mixed into the supervisor, which owns the state below."""

    chan_out: int
    run: dict[str, Any] | None
    worker: Worker | None
    session: Worker | None
    spares: list[Worker]
    preload: list[str]
    result: dict[str, Any] | None
    out: Capture
    err: Capture
    displayed: list[dict[str, Any] | None]
    dropped: int
    max_outputs: int
    max_outputs_bytes: int
    max_reply: int
    exited: dict[int, int]
    killed: bool
    oom_before: int | None
    cpu_before: float | None
    started: float
    phase: Any

    if TYPE_CHECKING:  # provided by the supervisor and its other mixins (stubs here
        # would shadow them in the method resolution order)
        def _drain(self, w: Worker) -> None:
            raise NotImplementedError

        def _usage(self, w: Worker) -> tuple[float, float] | None:
            raise NotImplementedError

        def _want(self, names: object) -> None:
            raise NotImplementedError

        def _flush_stream(self, final: bool = False, upto: list[int | None] | None = None) -> None:
            raise NotImplementedError

        def _kill_worker(self, w: Worker) -> None:
            raise NotImplementedError

        def _forget(self, w: Worker, wait: bool = True) -> None:
            raise NotImplementedError

        def _fork(self, *, once: bool) -> Worker:
            raise NotImplementedError

    def _maybe_finish(self) -> None:
        w = self.worker
        if self.run is None or w is None:
            return
        if self.result is None and w.alive:
            return
        self._drain(w)
        if self.result is None:  # the worker died without a word
            status = self.exited.pop(w.pid, 0)
            oom_now = oom_kills() or 0
            phase = self.phase if self.phase in ("inputs", "values") else None
            result = died(status, self.killed, oom_now > (self.oom_before or 0), phase)
        else:
            result = dict(self.result)
        shown = [o for o in self.displayed if o is not None]
        result["outputs"] = shown + list(result.get("outputs") or [])
        if self.dropped:
            note = (
                f"[gleitzeit: {self.dropped} more outputs not shown: over the limit of"
                f" {self.max_outputs} outputs or {self.max_outputs_bytes:,} bytes per run]"
            )
            result["outputs"].append({"type": "display_data", "data": {"text/plain": note}})
        usage = self._usage(w)
        if usage is not None:
            result["cpu_ms"] = max(0.0, usage[0] - (self.cpu_before or 0.0))
            result["peak_memory_mb"] = usage[1]
        self._want(result.pop("imported", None))
        result.setdefault("oom", False)
        result.setdefault("killed", self.killed)
        is_session = w is self.session
        result["session_lost"] = is_session and not w.alive
        self._finish(result)
        if not is_session or not w.alive:
            # Answer first, clean up after: the kernel is not kept waiting for the exit.
            self._kill_worker(w)
            self._forget(w, wait=False)
        if len(self.spares) < SPARES and not self.preload:
            self.spares.append(self._fork(once=True))  # one now; the idle loop tops up

    def _finish(self, result: dict[str, Any]) -> None:
        assert self.run is not None
        self._flush_stream(final=True)
        common = {
            "op": "result",
            "id": self.run.get("id"),
            "stdout": self.out.text(),
            "stderr": self.err.text(),
            "run_ms": (time.perf_counter() - self.started) * 1e3,
        }
        result.update(common)
        # The kernel reads no reply larger than max_reply, and takes a larger one for a
        # broken channel (the container is lost). Text re-encoded here can grow (a non-ASCII
        # character becomes a six-byte escape), so the reply is measured, not trusted.
        attachments = result.pop("attachments", None) or ()
        try:
            parts = protocol.encode_message(result, attachments)
            size = sum(len(memoryview(p)) for p in parts) - 4
            if size > self.max_reply:
                raise protocol.ProtocolError(
                    f"{size:,} bytes, over the {self.max_reply:,} byte limit"
                )
        except (protocol.ProtocolError, ValueError, TypeError, RecursionError, MemoryError) as exc:
            parts = attachments = []  # let the large one go before building the small one
            small = failed("ProtocolError", f"the run's result is too large to send ({exc})")
            ending = {k: result[k] for k in ("oom", "killed", "session_lost") if k in result}
            parts = [protocol.encode_frame({**small, **ending, **common})]
        self.run, self.worker = None, None
        protocol.write_all(self.chan_out, parts)
