"""The live status panel of one provider (:class:`StatusPanel`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ...hub.balancing import STRATEGIES
from .cells import hook_shell, open_panels
from .display import StaticDisplay
from .feed import Feed
from .formatting import aggregate_extras, extra_kind
from .loop import call_on_loop, find_loop, on_loop_thread
from .plot import latency_series, latency_svg, legend
from .rows import COLUMNS, NUMERIC, OPTIONAL, Row, cell_label
from .static import snapshot_html, snapshot_text
from .style import css_class, panel_style

log = logging.getLogger(__name__)


class StatusPanel:
    """The live status panel of one provider. Display it (``display(panel)`` or as a cell's
    value); ``close()`` stops its updates. ``updates`` counts the snapshots applied."""

    def __init__(
        self,
        provider: Any,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        interval: float = 1.0,
        heartbeat: float = 10.0,
        window: float = 300.0,
        closable: bool = True,
    ) -> None:
        self.provider = provider
        self.loop = loop or find_loop(provider)
        if self.loop is None:
            raise RuntimeError(
                f"cannot tell which event loop runs the {getattr(provider, 'name', '?')} pool;"
                " pass loop=..."
            )
        self.window = window
        self.updates = 0
        self.closed = False
        self._lock = threading.RLock()
        self._applying = False
        self._rows: dict[str, Row] = {}
        self._order: list[str] = []
        self._extra_kind: str | None = None
        self._plot_key: Any = None
        self._snapshot: dict[str, Any] | None = None
        self._series: dict[str, list[tuple[float, float]]] = {}
        name = getattr(provider, "name", "pool")

        self.title = w.HTML(f"<b>{html.escape(name)}</b>")
        self.title.add_class("gz-title")
        self.strategy = w.Dropdown(
            options=list(STRATEGIES),
            value=getattr(provider, "strategy", STRATEGIES[0]),
            description="strategy",
            layout=w.Layout(width="230px"),
            style={"description_width": "62px"},
        )
        self.strategy.add_class("gz-strategy")
        self.strategy.observe(self._on_strategy, names="value")
        self.info = w.Label("")
        self.info.add_class("gz-info")
        self.message = w.Label("")
        self.message.add_class("gz-message")
        self.close_button = w.Button(
            description="\u00d7",
            tooltip="close this panel (stops updates)",
            layout=w.Layout(width="30px", display="" if closable else "none"),
        )
        self.close_button.add_class("gz-close")
        self.close_button.on_click(lambda _b: self.close())
        header = w.HBox(
            [self.title, self.strategy, self.info, self.message, self.close_button],
            layout=w.Layout(align_items="center", justify_content="flex-start", grid_gap="12px"),
        )
        header.add_class("gz-header")
        # the column template is in the panel's CSS, which narrows it with the panel
        self.grid = w.GridBox(
            [], layout=w.Layout(grid_gap="2px 8px", align_items="center", overflow="hidden")
        )
        self.grid.add_class("gz-grid")
        self._header = [
            cell_label(h, "gz-head", f"gz-head-{c}", *(["gz-num"] if c in NUMERIC else []))
            for c, h, _ in COLUMNS
        ]
        self.total = Row(self, "ALL", total=True)
        self.plot = w.HTML(latency_svg({}, window=window))
        self.plot.add_class("gz-latency-plot")
        self.legend = w.HTML("")
        self.widget = w.VBox(
            [w.HTML(panel_style(COLUMNS, OPTIONAL)), header, self.grid, self.plot, self.legend]
        )
        self.widget.add_class("gz-panel")
        self.widget.add_class(css_class("gz-provider-", name))
        self.display = StaticDisplay(self.widget, self.static)

        hook_shell()
        open_panels.add(self)
        self._feed = Feed.for_provider(
            provider, self.loop, interval=interval, heartbeat=heartbeat, window=window
        )
        # First picture synchronously, so the displayed panel (and a saved notebook) shows
        # the pool as it is now; from then on the feed pushes updates.
        first = call_on_loop(
            self.loop, lambda: (provider.status(), latency_series(provider, window))
        )
        self._apply(*first)
        self._on_loop(lambda: self._feed.attach(self))

    # -- display ------------------------------------------------------------------------
    def _ipython_display_(self) -> None:
        # the widget view plus a static picture of the pool, kept up to date (display.py)
        self.display.show()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.display.bundle(live=not self.closed)

    def static(self) -> dict[str, str]:
        """``text/html`` and ``text/plain`` pictures of the state shown now."""
        with self._lock:
            snap, series = self._snapshot or {}, dict(self._series)
        note = "closed; last state" if self.closed else "snapshot"
        return {
            "text/html": snapshot_html(snap, series, window=self.window, note=note),
            "text/plain": snapshot_text(snap, note=note),
        }

    def text(self) -> str:
        snap = self._snapshot or {}
        totals = snap.get("totals", {})
        return (
            f"<StatusPanel {getattr(self.provider, 'name', '?')}: "
            f"{totals.get('available', totals.get('healthy', 0))}/{totals.get('instances', 0)}"
            " available, "
            f"{totals.get('requests', 0)} requests>"
        )

    def __repr__(self) -> str:
        return self.text()

    # -- state ----------------------------------------------------------------------------
    @property
    def rows(self) -> dict[str, dict[str, str]]:
        """What each row shows now: ``{instance: {column: text}}`` (plus ``ALL``), with the
        dot's ``color``, the name's ``title`` (hover text) and ``error_old`` (the last error
        is shown, uncoloured, as past)."""
        with self._lock:
            out = {}
            for key in [*self._order, "ALL"]:
                row = self._rows.get(key) if key != "ALL" else self.total
                if row is None:
                    continue
                vals = {c: getattr(wid, "value", "") for c, wid in row.cells.items()}
                vals.update(row.text)
                vals["color"] = row.dot.style.text_color or ""
                vals["title"] = row.title.get("instance", "")
                vals["error_old"] = row.error_old
                out[key] = vals
            return out

    def _apply(self, snap: dict[str, Any], series: dict[str, list[tuple[float, float]]]) -> None:
        if self.closed:
            return
        with self._lock:
            self._applying = True
            try:
                self._apply_locked(snap, series)
            finally:
                self._applying = False
            self._snapshot = snap
            self._series = series
            self.updates += 1

    def _apply_locked(self, snap: dict[str, Any], series: dict[str, Any]) -> None:
        rows = snap.get("instances", [])
        kind = extra_kind(rows)
        if kind != self._extra_kind:
            self._extra_kind = kind
            head = {"tokens": "tokens/s", "runs": "runs / recyc."}.get(kind or "", "")
            self._header[[c for c, _, _ in COLUMNS].index("extra")].value = head
        order = [r["instance"] for r in rows]
        for ident in order:
            if ident not in self._rows:
                self._rows[ident] = Row(self, ident)
        for row in rows:
            self._rows[row["instance"]].set(row, kind)
        self.total.set(aggregate_extras(kind, rows, snap.get("totals", {})), kind, totals=True)
        if order != self._order:
            for gone in set(self._rows) - set(order):
                old = self._rows.pop(gone)
                for wid in old.widgets:
                    wid.close()
            self._order = order
            children: list[w.Widget] = list(self._header)
            for ident in order:
                children += self._rows[ident].widgets
            children += self.total.widgets
            self.grid.children = children
        strategy = snap.get("strategy")
        if strategy in STRATEGIES and self.strategy.value != strategy:
            self.strategy.value = strategy
        queue = snap.get("queue", {})
        stamp = time.strftime("%H:%M:%S", time.localtime(snap.get("time", time.time())))
        info = f"{snap.get('kind', '')} \u00b7 {queue.get('waiting', 0)} queued \u00b7 {stamp}"
        if not snap.get("initialized", True):
            info = "not running \u00b7 " + info
        self.info.value = info
        plot_key = tuple((k, tuple(v)) for k, v in sorted(series.items()))
        # Redraw when the data changed, and at least every 10 s so the time axis slides.
        if plot_key != self._plot_key or int(snap.get("time", 0)) % 10 == 0:
            self._plot_key = plot_key
            self.plot.value = latency_svg(series, now=snap.get("time"), window=self.window)
            self.legend.value = legend([k for k, v in series.items() if v])

    # -- controls (notebook thread) -----------------------------------------------------
    def _on_loop(self, fn: Callable[[], Any]) -> None:
        if on_loop_thread(self.loop):
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    def _toggle(self, ident: str) -> None:
        row = self._rows.get(ident)
        enabled = row is None or row.drain is None or row.drain.description == "drain"
        self._action("drain" if enabled else "enable", ident)

    def _on_strategy(self, change: dict[str, Any]) -> None:
        if self._applying or change["new"] == change["old"]:
            return
        self._action("strategy", None, change["new"])

    def _action(self, action: str, ident: str | None, value: Any = None) -> None:
        """Run a control on the provider's loop, then refresh every panel at once."""
        provider = self.provider

        def run() -> None:
            from ..comm import run_action  # the sidebar's and %gleitzeit's controls too

            target = value if action == "strategy" else ident
            try:
                msg = run_action(provider, action, target)
            except Exception as exc:
                msg = f"{action} failed: {exc}"
            self.message.value = msg
            self._feed.refresh_now()

        self._on_loop(run)

    def refresh(self, wait: bool = True) -> None:
        """Refresh every panel of this provider now (from any thread)."""
        if on_loop_thread(self.loop):
            self._feed.refresh_now()
        elif wait:
            call_on_loop(self.loop, self._feed.refresh_now)
        else:
            self.loop.call_soon_threadsafe(self._feed.refresh_now)

    def close(self) -> None:
        """Stop updates (unsubscribing from the hub when it was the provider's last panel)
        and close the widgets."""
        if self.closed:
            return
        self.closed = True
        open_panels.discard(self)
        done = concurrent.futures.Future()

        def detach() -> None:
            try:
                self._feed.detach(self)
            finally:
                done.set_result(None)

        if self.loop.is_closed() or not self.loop.is_running():
            detach()  # the runtime is gone (or stopping): nothing runs there any more
        else:
            self._on_loop(detach)
            if not on_loop_thread(self.loop):
                try:
                    done.result(5)
                except concurrent.futures.TimeoutError:  # pragma: no cover - loop stuck
                    log.warning("gleitzeit panel: detaching timed out")
        self.display.finish()
        with self._lock:
            _close_tree(self.widget)

    @property
    def cpu_seconds(self) -> float:
        """CPU time the runtime loop has spent refreshing this provider's panels so far."""
        return self._feed.cpu_seconds

    @property
    def subscribed(self) -> bool:
        return self._feed.unsubscribe is not None and self in self._feed.panels


def _close_tree(widget: w.Widget) -> None:
    for child in list(getattr(widget, "children", ()) or ()):
        _close_tree(child)
    layout = getattr(widget, "layout", None)
    style = getattr(widget, "style", None)
    widget.close()
    for sub in (layout, style):
        if isinstance(sub, w.Widget):
            sub.close()
