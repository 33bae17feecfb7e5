"""A notebook progress bar that leaves a static picture behind.

tqdm's notebook bar is a widget: in a notebook reopened after a restart it shows as a broken
widget. :class:`NotebookProgress` displays the same bar through a
:class:`~.display.StaticDisplay`, and when the bar closes its output becomes the static
``text/html`` / ``text/plain`` of the final state, which every front end shows.
"""

from __future__ import annotations

import html
from typing import Any

from tqdm.notebook import tqdm as _notebook_tqdm

from .display import StaticDisplay

_COLORS = {"success": "#2e9e44", "danger": "#d62728", "": "#1f77b4"}


class NotebookProgress(_notebook_tqdm):
    """``tqdm.notebook.tqdm`` with a static picture (same arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["display"] = False  # displayed below, with its static picture
        self._style = ""
        super().__init__(*args, **kwargs)
        self.static_display = StaticDisplay(self.container, self.static)
        if not self.disable:
            self.static_display.show()

    def display(self, *args: Any, bar_style: str | None = None, **kwargs: Any) -> Any:
        if bar_style is not None:
            self._style = bar_style
        return super().display(*args, bar_style=bar_style, **kwargs)

    def static(self) -> dict[str, str]:
        """The bar as it is now: ``text/plain`` is tqdm's own line."""
        d = dict(self.format_dict)
        d["ncols"] = 0  # the meter without a bar
        line = self.format_meter(**d)
        total, n = d.get("total"), d.get("n", 0)
        frac = min(1.0, n / total) if total else 0.0
        color = _COLORS.get(self._style, _COLORS[""])
        bar = (
            '<span style="display:inline-block;width:240px;height:10px;vertical-align:middle;'
            'background:var(--jp-layout-color3, #e5e7eb);border-radius:3px;overflow:hidden">'
            f'<span style="display:block;height:100%;width:{frac * 100:.1f}%;'
            f'background:{color}"></span></span>'
        )
        return {
            "text/html": (
                '<div class="gz-static" data-gleitzeit-static="progress" style="font-size:12px;'
                'color:var(--jp-ui-font-color1, #1f2328)">'
                f"{bar} <code>{html.escape(line)}</code></div>"
            ),
            "text/plain": line,
        }

    def close(self) -> None:
        closed = self.disable
        super().close()
        if not closed and getattr(self, "static_display", None) is not None:
            # the finished bar stays as its static picture (no widget left to break)
            self.static_display.finish()
