"""The entry points: :func:`status_panel` builds the panel a target wants, :func:`show_status`
displays it."""

from __future__ import annotations

from typing import Any

from .board import ProviderList, StatusBoard
from .cells import replace_cell_panel
from .panel import StatusPanel


def status_panel(target: Any = None, **opts: Any) -> StatusPanel | StatusBoard:
    """A panel for ``target``: a kernel runtime (every pool, now and later; default: the
    kernel's runtime), one provider, or a list/dict of providers. Not displayed yet: return
    it from a cell or pass it to ``display``.

    Re-running the cell that made a panel (same JupyterLab cell id) closes the old panel, so
    re-runs do not leave invisible panels updating in the background."""
    if target is None:
        from ..runtime import get_runtime

        target = get_runtime()
    panel: StatusPanel | StatusBoard
    if hasattr(target, "providers") and hasattr(target, "subscribe") and hasattr(target, "loop"):
        panel = StatusBoard(target, **opts)
    else:
        if isinstance(target, dict):
            target = list(target.values())
        if isinstance(target, (list, tuple)):
            if len(target) == 1:
                panel = StatusPanel(target[0], **opts)
            else:
                panel = ProviderList([StatusPanel(p, **opts) for p in target])
        else:
            panel = StatusPanel(target, **opts)
    replace_cell_panel(panel)
    return panel


def show_status(target: Any = None, **opts: Any) -> StatusPanel | StatusBoard:
    """Display a live status panel for ``target`` (see :func:`status_panel`) and return it."""
    from IPython.display import display

    panel = status_panel(target, **opts)
    display(panel)
    return panel
