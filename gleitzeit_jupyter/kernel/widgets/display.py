"""Displaying a live widget together with a static picture of its last state.

:class:`StaticDisplay` puts one output in the notebook whose bundle holds the widget view
*and* ``text/html`` / ``text/plain``, under a display id. :meth:`StaticDisplay.publish`
replaces the static parts with the current state (at the end of every cell, see
:mod:`.cells`), and :meth:`StaticDisplay.finish` drops the widget view once the widget is
closed, so the output keeps its last picture instead of an empty or broken widget.

Front ends without the widget's model (a reopened notebook, nbconvert, GitHub) show the
static parts: nbconvert and GitHub pick the next MIME type themselves; JupyterLab's widget
manager does not (it shows "model not found"), so the labextension swaps in the
``text/html`` there.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

#: Every display that has been shown and not finished (weakly: one nobody holds may go).
shown: weakref.WeakSet = weakref.WeakSet()


class StaticDisplay:
    """The output of one live widget. ``static`` returns ``{"text/html": ..., "text/plain":
    ...}`` for the state now."""

    def __init__(self, widget: Any, static: Callable[[], dict[str, str]]) -> None:
        self.widget = widget
        self.static = static
        self.display_id = f"gleitzeit-{uuid.uuid4().hex}"
        self.displayed = False
        self.finished = False
        self._last: dict[str, str] | None = None

    def bundle(self, live: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if live:
            view = (self.widget._repr_mimebundle_() or {}).get(WIDGET_MIME)
            if view is not None:
                data[WIDGET_MIME] = view
        data.update(self.static())
        return data

    def show(self) -> None:
        from IPython.display import display

        data = self.bundle(live=not self.finished)
        display(data, raw=True, display_id=self.display_id)
        self._last = {k: v for k, v in data.items() if k != WIDGET_MIME}
        self.displayed = True
        if not self.finished:
            shown.add(self)

    def publish(self, live: bool = True) -> None:
        """Update every output of this display with the state now (only when it changed)."""
        if not self.displayed:
            return
        data = self.bundle(live=live)
        static = {k: v for k, v in data.items() if k != WIDGET_MIME}
        if live and static == self._last:
            return
        from IPython.display import update_display

        try:
            update_display(data, raw=True, display_id=self.display_id)
        except Exception:  # the kernel is going away: nothing left to update
            log.debug("gleitzeit: updating a display failed", exc_info=True)
            return
        self._last = static

    def finish(self) -> None:
        """The widget is closing: leave its last picture in place of the widget view."""
        if self.finished:
            return
        self.finished = True
        shown.discard(self)
        self.publish(live=False)


def publish_all() -> None:
    """Bring every shown display's static picture up to date (end of a cell)."""
    for item in list(shown):
        try:
            item.publish()
        except Exception:
            log.debug("gleitzeit: publishing a static picture failed", exc_info=True)
