"""Panels across notebook cells: IPython's cell hooks, the open panels, re-run cells."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from .display import publish_all
from .feed import Feed
from .loop import call_on_loop

log = logging.getLogger(__name__)

#: Every panel not closed yet (weakly: a panel nobody holds may go).
open_panels: weakref.WeakSet = weakref.WeakSet()

_hook_lock = threading.Lock()
_hooked_shell: Any = None


def _after_cell(*_args: Any) -> None:
    """IPython ``post_run_cell``: bring every open panel up to date with what the cell did,
    before the kernel reports idle (so a saved or exported notebook shows the final state)."""
    for panel in list(open_panels):
        if panel.loop.is_closed():
            # The runtime was shut down (%unload_ext, %gleitzeit reset): let its panels go.
            panel.close()
    for feed in Feed.open_feeds():
        if not feed.panels or feed.loop.is_closed() or not feed.loop.is_running():
            continue
        try:
            call_on_loop(feed.loop, feed.refresh_now, timeout=2.0)
        except Exception:
            log.debug("gleitzeit panel: refresh after a cell failed", exc_info=True)
    publish_all()  # the static pictures a saved notebook keeps


def _before_cell(*_args: Any) -> None:
    """IPython ``pre_run_cell``: a call the cell starts emits no event until it ends, so look
    again shortly after the cell starts; while calls are in flight the feed then keeps
    refreshing every ``interval`` (a single long call shows as in flight within a second)."""
    for feed in Feed.open_feeds():
        if feed.panels and feed.loop.is_running():
            feed.loop.call_soon_threadsafe(feed.schedule, min(0.5, feed.interval))


def close_all() -> int:
    """Close every open panel (e.g. when the extension is unloaded); returns how many."""
    panels = list(open_panels)
    for panel in panels:
        panel.close()
    return len(panels)


def hook_shell() -> None:
    global _hooked_shell
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    shell = get_ipython()
    with _hook_lock:
        if shell is None or shell is _hooked_shell:
            return
        shell.events.register("pre_run_cell", _before_cell)
        shell.events.register("post_run_cell", _after_cell)
        _hooked_shell = shell


#: cell id -> (the run that made its panels, those panels)
_by_cell: dict[str, tuple[str | None, list[weakref.ref]]] = {}
_cell_lock = threading.Lock()


def _cell_run() -> tuple[str | None, str | None]:
    """(the front end's id of the cell being executed, the id of this run of it);
    JupyterLab and nbclient send the cell id."""
    try:
        from ipykernel.kernelbase import Kernel

        if not Kernel.initialized():
            return None, None
        parent = Kernel.instance().get_parent() or {}
    except Exception:
        return None, None
    cell = parent.get("metadata", {}).get("cellId")
    run = parent.get("header", {}).get("msg_id")
    return (cell if isinstance(cell, str) and cell else None), run


def replace_cell_panel(panel: Any) -> None:
    """Remember ``panel`` as one the executing cell made, closing the panels an earlier run
    of that cell made (not those of this run: a cell may show several)."""
    cell, run = _cell_run()
    if cell is None:
        return
    with _cell_lock:
        made_by, refs = _by_cell.get(cell, (None, []))
        same_run = run is not None and made_by == run
        old = [] if same_run else refs
        _by_cell[cell] = (run, (refs if same_run else []) + [weakref.ref(panel)])
    for ref in old:
        previous = ref()
        if previous is not None and previous is not panel:
            previous.close()
