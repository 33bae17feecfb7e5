"""Streaming a run's output in order, and measuring its worker (stdlib only; a mixin of the
in-container supervisor).

``display()`` in the worker sends each output on the result pipe with the number of bytes it
had written to stdout and stderr by then. Text printed after the output may already be in its
pipe when the output is read, so text is taken up to that mark, then the output is sent, then
the rest: the kernel sees them in the order the code produced them.
"""

from __future__ import annotations

import time
from typing import Any

try:  # on the host (tests, tooling) this is a normal package module
    from . import protocol
    from .procs import Capture, Worker
    from .usage import cpu_ms, peak_memory_mb
except ImportError:  # inside the container the bootstrap has installed these modules
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]
    from gleitzeit_procs import Capture, Worker  # type: ignore[import-not-found,no-redef]
    from gleitzeit_usage import cpu_ms, peak_memory_mb  # type: ignore[import-not-found,no-redef]

__all__ = ["OutputRelay"]


class OutputRelay:
    """Mixed into the supervisor, which owns the state below."""

    run: dict[str, Any] | None
    worker: Worker | None
    result: dict[str, Any] | None
    out: Capture
    err: Capture
    displayed: list[dict[str, Any] | None]
    displayed_bytes: int
    dropped: int
    max_outputs: int
    max_outputs_bytes: int

    def send(self, message: dict[str, Any]) -> None:  # provided by the supervisor
        raise NotImplementedError

    def _consume(self, w: Worker, name: str, most: int = 1 << 16) -> bool:
        raise NotImplementedError

    def _reap(self) -> None:
        raise NotImplementedError

    def _display(self, w: Worker, output: Any, at: Any) -> None:
        """An output shown while the run goes on: after the text printed before it.

        ``at`` is how many bytes the worker says it had written to stdout and stderr; only
        the order of what is shown depends on it, so a false claim misplaces only its own run's
        output."""
        if not isinstance(output, dict) or self.run is None:
            return
        size = len(protocol.encode_frame(output))
        full = self.displayed_bytes + size > self.max_outputs_bytes
        if len(self.displayed) >= self.max_outputs or full:
            self.dropped += 1  # past the caps: dropped here, noted in the result
            return
        self.displayed_bytes += size
        marks = at if isinstance(at, list) and len(at) == 2 else [None, None]
        marks = [m if type(m) is int else None for m in marks]
        for name, capture, mark in (("out", self.out, marks[0]), ("err", self.err, marks[1])):
            # That text was flushed before the frame was written: it is in the pipe by now.
            while mark is not None and getattr(w, name) is not None and capture.seen < mark:
                if not self._consume(w, name, mark - capture.seen):
                    break
        if self.run.get("stream"):
            self._flush_stream(upto=marks)
            self.send({"op": "chunk", "id": self.run.get("id"), "output": output})
            self.displayed.append(None)  # counted, already sent
        else:
            self.displayed.append(output)

    def _usage(self, w: Worker) -> tuple[float, float] | None:
        """(CPU ms, peak MiB) of the run's worker, from the kernel's accounting: /proc while
        it lives, ``wait4`` once it exited; never what the worker reports."""
        for _ in range(20):
            if not w.alive:
                return w.usage
            cpu, peak = cpu_ms(w.pid), peak_memory_mb(w.pid)
            if cpu is not None and peak is not None:
                return cpu, peak
            # Exiting (its memory already gone, not yet a zombie to reap): wait a moment.
            time.sleep(0.0005)
            self._reap()
        return None

    def _flush_stream(self, final: bool = False, upto: list[int | None] | None = None) -> None:
        """Send output captured since the last flush as one ``chunk`` frame (streaming runs;
        once per loop pass, so a busy printer yields few, larger frames).

        Display outputs written before the text read so far are taken first (they wait in
        the result pipe), so text printed after an output is never sent before it."""
        if self.run is None or not self.run.get("stream"):
            return
        w = self.worker
        if upto is None and w is not None and self.result is None:
            while w.res is not None and self.result is None and self._consume(w, "res"):
                pass
        if self.run is None:  # the drain may have finished a failing run
            return
        upto = upto or [None, None]
        chunk = {
            "stdout": self.out.take(final, upto[0]),
            "stderr": self.err.take(final, upto[1]),
        }
        chunk = {k: v for k, v in chunk.items() if v}
        if chunk:
            self.send({"op": "chunk", "id": self.run.get("id"), **chunk})
