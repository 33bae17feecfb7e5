"""Adaptive preloading and spare workers (stdlib only; a mixin of the in-container
supervisor)."""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING

try:  # on the host (tests, tooling) this is a normal package module
    from .procs import Worker
except ImportError:  # inside the container the bootstrap has installed these modules
    from gleitzeit_procs import Worker  # type: ignore[import-not-found,no-redef]

__all__ = ["PRELOADABLE", "SPARES", "Preloading"]

# Pre-forked workers kept ready. Two, not one: a spare forked right after a run may not have
# been scheduled yet when the next request arrives (the machine is busy), but the one forked a
# run earlier has; on a loaded host this halves the latency of back-to-back runs.
SPARES = 2
# Heavy libraries the parent may import so that forked workers get them for free. A bigger
# parent makes every fork and exit dearer (print(1): ~0.6 ms bare, ~4.5 ms with pandas), so
# nothing is preloaded up front: once a run imports one of these, the parent imports it too
# (adaptive preloading). Only names from this list are honoured, whatever a run reports.
PRELOADABLE = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot", "scipy", "PIL")


class Preloading:
    """Mixed into the supervisor, which owns the state below."""

    preload: list[str]
    dirty: set[int]
    session: Worker | None
    spares: list[Worker]

    if TYPE_CHECKING:  # provided by the supervisor and its other mixins (stubs here
        # would shadow them in the method resolution order)
        def _sweep_dirty(self) -> None:
            raise NotImplementedError

        def _kill_worker(self, w: Worker) -> None:
            raise NotImplementedError

        def _forget(self, w: Worker, wait: bool = True) -> None:
            raise NotImplementedError

        def _fork(self, *, once: bool) -> Worker:
            raise NotImplementedError

    def _want(self, names: object) -> None:
        if not isinstance(names, list):
            return
        for name in names:
            if name in PRELOADABLE and name not in sys.modules and name not in self.preload:
                self.preload.append(name)

    def _may_preload(self) -> bool:
        """Import in this process only when no run's file can be read by the import: every
        finished run is wiped, and no session (whose files stay between its runs) is alive.
        matplotlib reads a matplotlibrc from /tmp when imported; read here, a session's
        would reach every worker forked afterwards, surviving its reset."""
        return bool(self.preload) and not self.dirty and self.session is None

    def _idle_work(self) -> None:
        if self.dirty:
            self._sweep_dirty()
        elif self._may_preload():
            try:
                __import__(self.preload.pop(0))
            except Exception:
                pass
            for spare in self.spares:  # forked without the new module: retire them
                self._kill_worker(spare)
                self._forget(spare, wait=False)
            self.spares.clear()
            if not self.preload:
                # Park everything imported so far outside the GC: a worker's collections
                # then never touch (and copy-on-write) the parent's pages.
                gc.freeze()
        elif len(self.spares) < SPARES:
            self.spares.append(self._fork(once=True))
