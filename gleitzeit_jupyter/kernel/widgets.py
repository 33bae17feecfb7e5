"""Live status panels: the pools at a glance, as standard ipywidgets.

One :class:`StatusPanel` per provider renders ``provider.status()`` (the same snapshot the
sidebar and ``%gleitzeit status`` read): one row per instance (health dot, breaker, in flight,
requests, success rate, p50/p95/p99, tokens/s or runs/recycled, last error), an aggregate row,
and an SVG plot of p95 latency over the recent window. Buttons drain / re-enable an instance
and reset its breaker; a dropdown switches the strategy.

Live updates without polling: a :class:`_Feed` per provider subscribes to the hub's events
(status, breaker, membership, strategy and the coalesced ~1/s ``metrics`` event) while at
least one panel on that provider is open. An event schedules one refresh on the provider's
loop, throttled to ``interval`` (1 s): the feed takes *one* snapshot and applies it to every
open panel, so several panels always show the same numbers. While calls are in flight a refresh
repeats every ``interval`` (in-flight counts change without events); an idle pool is refreshed
only by its events and a slow ``heartbeat``.

Threads: snapshots are taken on the provider's loop (the runtime's background thread, where the
pool's state is mutated), and widget values are set there too. ipywidgets sends a changed value
as a comm message; ipykernel (6 and 7) hands IOPub sends from any thread to its IOPub thread
through a per-thread pipe, so the front end gets the update while the notebook thread is busy
running a long cell. Button clicks arrive on the notebook thread and are marshalled onto the
loop. Closing a panel (its x button or :meth:`StatusPanel.close`) detaches it; the last panel
of a provider unsubscribes from the hub.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as w

from ..hub.balancing import STRATEGIES

__all__ = [
    "BREAKER_COLORS",
    "HEALTH_COLORS",
    "StatusBoard",
    "StatusPanel",
    "close_all",
    "latency_svg",
    "show_status",
    "status_panel",
]

log = logging.getLogger(__name__)

#: Health dot colour by instance status (``status`` of a row: ``drained`` when disabled).
HEALTH_COLORS = {
    "healthy": "#2e9e44",
    "degraded": "#e0a100",
    "unhealthy": "#d62728",
    "starting": "#4a90d9",
    "draining": "#9e9e9e",
    "drained": "#9e9e9e",
    "stopped": "#555555",
}
BREAKER_COLORS = {"closed": "#2e9e44", "half_open": "#e0a100", "open": "#d62728"}
#: Line colours of the latency plot, one per instance (cycled).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
DASH = "\u2013"

_COLUMNS = (
    # (key, header, width): fits a JupyterLab notebook of ~1000 px; scrolls when narrower
    ("dot", "", "16px"),
    ("instance", "instance", "minmax(90px, 1.5fr)"),
    ("status", "health", "70px"),
    ("breaker", "breaker", "66px"),
    ("in_flight", "in flight", "62px"),
    ("requests", "requests", "66px"),
    ("success_rate", "success", "58px"),
    ("p50_ms", "p50", "60px"),
    ("p95_ms", "p95", "60px"),
    ("p99_ms", "p99", "60px"),
    ("extra", "", "80px"),
    ("last_error", "last error", "minmax(80px, 2fr)"),
    ("actions", "", "122px"),
)
_NUMERIC = ("in_flight", "requests", "success_rate", "p50_ms", "p95_ms", "p99_ms", "extra")
_GRID = " ".join(width for _, _, width in _COLUMNS)
_STYLE = """<style>
.gz-panel { border: 1px solid var(--jp-border-color1, #d0d7de); border-radius: 6px;
  padding: 6px 10px; }
.gz-panel .widget-label { margin: 0; }
.gz-panel .gz-head { font-weight: bold; color: var(--jp-ui-font-color2, #57606a);
  border-bottom: 1px solid var(--jp-border-color1, #d0d7de); }
.gz-panel .gz-total { font-weight: bold; border-top: 1px solid var(--jp-border-color1, #d0d7de); }
.gz-panel .gz-num { justify-content: flex-end; font-variant-numeric: tabular-nums; }
.gz-panel .gz-dot { font-size: 18px; justify-content: center; }
.gz-panel .gz-err { color: #b3261e; }
.gz-panel .gz-info, .gz-panel .gz-message { color: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-axis { fill: var(--jp-ui-font-color2, #57606a); }
.gz-panel .gz-plot-bg { fill: var(--jp-layout-color2, #fafbfc);
  stroke: var(--jp-border-color1, #d0d7de); }
.gz-panel .jupyter-button { height: 24px; line-height: 22px; padding: 0 6px; }
</style>"""


# ------------------------------------------------------------------ formatting
def fmt_ms(value: float | None) -> str:
    if value is None:
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return DASH
    pct = value * 100
    return "100 %" if pct >= 99.995 else f"{pct:.1f} %"


def fmt_int(value: Any) -> str:
    return DASH if value is None else f"{int(value):,}"


def _extra_kind(rows: Iterable[dict[str, Any]]) -> str | None:
    for row in rows:
        if "tokens_per_s" in row:
            return "tokens"
        if "runs" in row or "recycled" in row:
            return "runs"
    return None


def _fmt_extra(kind: str | None, row: dict[str, Any]) -> str:
    if kind == "tokens":
        tps = row.get("tokens_per_s")
        return DASH if tps is None else f"{tps:,.1f}"
    if kind == "runs":
        return f"{fmt_int(row.get('runs', 0))} / {fmt_int(row.get('recycled', 0))}"
    return ""


def _aggregate_extras(
    kind: str | None, rows: list[dict[str, Any]], totals: dict[str, Any]
) -> dict[str, Any]:
    """The pool's totals plus the provider extras summed (runs, recycled) or averaged
    (tokens/s, a per-instance speed)."""
    out = dict(totals)
    if kind == "runs":
        out["runs"] = sum(r.get("runs") or 0 for r in rows)
        out["recycled"] = sum(r.get("recycled") or 0 for r in rows)
    elif kind == "tokens":
        speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s") is not None]
        out["tokens_per_s"] = sum(speeds) / len(speeds) if speeds else None
    return out


def _shorten(text: str | None, limit: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def latency_svg(
    series: dict[str, list[tuple[float, float]]],
    *,
    now: float | None = None,
    window: float = 300.0,
    width: int = 420,
    height: int = 90,
) -> str:
    """An inline SVG line plot of latency (ms) over the last ``window`` seconds, one line per
    instance. Plain SVG: it renders in JupyterLab, in nbconvert HTML and on GitHub alike."""
    now = time.time() if now is None else now
    left, right, top, bottom = 44, 8, 8, 18
    pw, ph = width - left - right, height - top - bottom
    points = {
        k: [(t, v) for t, v in pts if now - t <= window and v is not None]
        for k, pts in series.items()
    }
    peak = max((v for pts in points.values() for _, v in pts), default=0.0)
    # The x axis spans the data (at least a minute), up to the whole window.
    oldest = min((t for pts in points.values() for t, _ in pts), default=now)
    span = min(window, max(60.0, now - oldest + 5.0))
    span_text = f"-{span:.0f} s" if span < 120 else f"-{span / 60:.0f} min"
    ymax = _nice_ceiling(peak) if peak > 0 else 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="gz-plot" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif"'
        ' font-size="10">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="gz-plot-bg"'
        ' fill="#fafbfc" stroke="#d0d7de"/>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end" class="gz-axis" fill="#57606a">'
        f"{html.escape(fmt_ms(ymax))}</text>",
        f'<text x="{left - 4}" y="{top + ph}" text-anchor="end" class="gz-axis"'
        ' fill="#57606a">0</text>',
        f'<text x="{left}" y="{height - 4}" class="gz-axis" fill="#57606a">{span_text}</text>',
        f'<text x="{left + pw}" y="{height - 4}" text-anchor="end" class="gz-axis" fill="#57606a">'
        "now \u00b7 p95 latency</text>",
    ]
    drawn = 0
    for k, (name, pts) in enumerate(sorted(points.items())):
        if not pts:
            continue
        color = PALETTE[k % len(PALETTE)]
        coords = " ".join(
            f"{left + pw * (1 - (now - t) / span):.1f},{top + ph * (1 - v / ymax):.1f}"
            for t, v in sorted(pts)
        )
        title = f"<title>{html.escape(name)}</title>"
        if len(pts) == 1:
            x, y = coords.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}">{title}</circle>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.6"'
                f' points="{coords}">{title}</polyline>'
            )
        drawn += 1
    if not drawn:
        parts.append(
            f'<text x="{left + pw / 2}" y="{top + ph / 2 + 3}" text-anchor="middle"'
            ' fill="#8c959f">no calls in the window yet</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    import math

    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _legend(names: list[str]) -> str:
    items = []
    for k, name in enumerate(sorted(names)):
        color = PALETTE[k % len(PALETTE)]
        items.append(
            f'<span style="margin-right:10px;white-space:nowrap"><span style="color:{color}">'
            f"\u25ac</span> {html.escape(name)}</span>"
        )
    return f'<div style="font-size:11px;color:#57606a">{"".join(items)}</div>'


# ------------------------------------------------------------------ data on the loop
def latency_series(provider: Any, window: float = 300.0) -> dict[str, list[tuple[float, float]]]:
    """Per instance ``[(wall time, p95 ms)]`` of the metric buckets in the recent window.
    Call on the provider's loop."""
    now = time.time()
    out: dict[str, list[tuple[float, float]]] = {}
    for inst in provider.instances:
        metrics = getattr(inst, "metrics", None)
        if metrics is None:
            continue
        rows = metrics.history_rows()
        pts = []
        for row in reversed(rows):
            if now - row["time"] > window:
                break
            if row.get("p95_ms") is not None:
                pts.append((row["time"], row["p95_ms"]))
        out[inst.id] = pts
    return out


def _find_loop(provider: Any) -> asyncio.AbstractEventLoop | None:
    """The loop a provider runs on: the kernel runtime's, else that of its background tasks."""
    try:
        from .runtime import current_runtime

        rt = current_runtime()
    except ImportError:  # pragma: no cover - same package
        rt = None
    if rt is not None and any(p is provider for p in rt.providers.values()):
        return rt.loop
    for task in getattr(provider, "_tasks", []) or []:
        try:
            return task.get_loop()
        except AttributeError:  # pragma: no cover - very old asyncio
            continue
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], timeout: float = 10.0):
    """Run ``fn()`` on ``loop`` and return its result (directly when already there)."""
    if _on_loop_thread(loop) or not loop.is_running():
        return fn()

    async def call() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)


_hook_lock = threading.Lock()
_hooked_shell: Any = None


def _after_cell(*_args: Any) -> None:
    """IPython ``post_run_cell``: bring every open panel up to date with what the cell did,
    before the kernel reports idle (so a saved or exported notebook shows the final state)."""
    for panel in list(_open_panels):
        if panel.loop.is_closed():
            # The runtime was shut down (%unload_ext, %gleitzeit reset): let its panels go.
            panel.close()
    with _Feed._lock:
        feeds = list(_Feed._feeds.values())
    for feed in feeds:
        if not feed.panels or feed.loop.is_closed() or not feed.loop.is_running():
            continue
        try:
            _call_on_loop(feed.loop, feed.refresh_now, timeout=2.0)
        except Exception:
            log.debug("gleitzeit panel: refresh after a cell failed", exc_info=True)


def _before_cell(*_args: Any) -> None:
    """IPython ``pre_run_cell``: a call the cell starts emits no event until it ends, so look
    again shortly after the cell starts; while calls are in flight the feed then keeps
    refreshing every ``interval`` (a single long call shows as in flight within a second)."""
    with _Feed._lock:
        feeds = list(_Feed._feeds.values())
    for feed in feeds:
        if feed.panels and feed.loop.is_running():
            feed.loop.call_soon_threadsafe(feed.schedule, min(0.5, feed.interval))


def close_all() -> int:
    """Close every open panel (e.g. when the extension is unloaded); returns how many."""
    panels = list(_open_panels)
    for panel in panels:
        panel.close()
    return len(panels)


#: Every panel not closed yet (weakly: a panel nobody holds may go).
_open_panels: weakref.WeakSet = weakref.WeakSet()


def _hook_shell() -> None:
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


class _Feed:
    """One subscription per provider, shared by its open panels (state touched on the loop)."""

    _feeds: dict[int, _Feed] = {}
    _lock = threading.Lock()

    def __init__(
        self,
        provider: Any,
        loop: asyncio.AbstractEventLoop,
        interval: float,
        heartbeat: float,
        window: float,
    ) -> None:
        self.provider = provider
        self.loop = loop
        self.interval = interval
        self.heartbeat = heartbeat
        self.window = window
        self.panels: list[StatusPanel] = []
        self.unsubscribe: Callable[[], None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")
        self.last = -float("inf")
        self.ticks = 0
        self.cpu_seconds = 0.0
        self.snapshot: dict[str, Any] | None = None
        self.series: dict[str, list[tuple[float, float]]] = {}

    @classmethod
    def for_provider(cls, provider: Any, loop: asyncio.AbstractEventLoop, **opts: Any) -> _Feed:
        with cls._lock:
            feed = cls._feeds.get(id(provider))
            if feed is None or feed.provider is not provider:
                feed = cls._feeds[id(provider)] = cls(provider, loop, **opts)
            return feed

    # -- on the loop ------------------------------------------------------------------
    def attach(self, panel: StatusPanel) -> None:
        if panel not in self.panels:
            self.panels.append(panel)
        if self.unsubscribe is None:
            self.unsubscribe = self.provider.subscribe(self.on_event)
        if self.snapshot is not None:
            panel._apply(self.snapshot, self.series)
        self.schedule(self.interval)

    def detach(self, panel: StatusPanel) -> None:
        if panel in self.panels:
            self.panels.remove(panel)
        if self.panels:
            return
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = float("inf")
        with _Feed._lock:
            if _Feed._feeds.get(id(self.provider)) is self:
                del _Feed._feeds[id(self.provider)]

    def on_event(self, event: Any) -> None:
        # Runs on the loop for every hub event: cheap, never blocks. Bursts coalesce into one
        # refresh at most every ``interval`` seconds.
        self.schedule(max(0.0, self.last + self.interval - self.loop.time()))

    def schedule(self, delay: float) -> None:
        if not self.panels:
            return
        at = self.loop.time() + delay
        if self.timer is not None:
            if self.timer_at <= at:
                return
            self.timer.cancel()
        self.timer_at = at
        self.timer = self.loop.call_at(at, self.tick)

    def tick(self) -> None:
        self.timer = None
        self.timer_at = float("inf")
        if not self.panels:
            return
        self.last = self.loop.time()
        try:
            self.refresh()
        except Exception:
            log.exception(
                "gleitzeit panel: refreshing %s failed", getattr(self.provider, "name", "?")
            )
        busy = self.snapshot is not None and (
            self.snapshot["totals"].get("in_flight", 0) or self.snapshot["queue"].get("waiting")
        )
        self.schedule(self.interval if busy else self.heartbeat)

    def refresh(self) -> None:
        started = time.thread_time()
        self.snapshot = self.provider.status()
        self.series = latency_series(self.provider, self.window)
        self.ticks += 1
        for panel in list(self.panels):
            try:
                panel._apply(self.snapshot, self.series)
            except Exception:
                log.exception("gleitzeit panel: updating a panel failed")
        # CPU time this loop thread spent on panels (snapshot, widget updates, their sends).
        self.cpu_seconds += time.thread_time() - started

    def refresh_now(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = float("inf")
        self.tick()


# ------------------------------------------------------------------ widgets
def row_class(instance_id: str) -> str:
    """CSS class on every cell of an instance's row (``gz-row-ALL`` for the aggregate)."""
    return "gz-row-" + re.sub(r"[^A-Za-z0-9_-]", "_", instance_id)


def _label(text: str = "", *classes: str, tooltip: str | None = None) -> w.Label:
    label = w.Label(text, layout=w.Layout(min_width="0", overflow="hidden"))
    for c in classes:
        label.add_class(c)
    if tooltip:
        label.tooltip = tooltip
    return label


class _Row:
    """The widgets of one instance row (or the aggregate row)."""

    def __init__(self, panel: StatusPanel, key: str, total: bool = False) -> None:
        self.key = key
        self.total = total
        kind = "total" if total else "inst"
        self.cells: dict[str, w.Widget] = {}
        for col, _, _ in _COLUMNS:
            if col == "actions":
                continue
            classes = [f"gz-cell-{col}", f"gz-{kind}", row_class(key)]
            if col in _NUMERIC:
                classes.append("gz-num")
            if col == "dot":
                classes.append("gz-dot")
            if col == "last_error":
                classes.append("gz-err")
            if total:
                classes.append("gz-total")
            self.cells[col] = _label("", *classes)
        self.dot: w.Label = self.cells["dot"]  # type: ignore[assignment]
        if total:
            self.cells["dot"].value = "\u03a3"
            self.cells["instance"].value = "ALL"
            self.actions: w.Widget = _label("")
            self.drain = self.reset = None
        else:
            self.dot.value = "\u25cf"
            self.drain = w.Button(
                description="drain", tooltip="take out of rotation", layout=w.Layout(width="60px")
            )
            self.drain.add_class("gz-drain")
            self.drain.add_class(row_class(key))
            self.reset = w.Button(
                description="reset",
                tooltip="reset the circuit breaker",
                layout=w.Layout(width="56px"),
                disabled=True,
            )
            self.reset.add_class("gz-reset")
            self.reset.add_class(row_class(key))
            self.drain.on_click(lambda _b: panel._toggle(self.key))
            self.reset.on_click(lambda _b: panel._action("reset_breaker", self.key))
            self.actions = w.HBox([self.drain, self.reset])
        self.actions.add_class("gz-cell-actions")

    @property
    def widgets(self) -> list[w.Widget]:
        return [self.cells[c] if c != "actions" else self.actions for c, _, _ in _COLUMNS]

    def set(self, row: dict[str, Any], extra_kind: str | None, totals: bool = False) -> None:
        c = self.cells
        if totals:
            c["status"].value = f"{row.get('healthy', 0)}/{row.get('instances', 0)} ok"
            c["breaker"].value = (
                f"{row['open_breakers']} open" if row.get("open_breakers") else "closed"
            )
        else:
            status = row.get("status", "")
            color = HEALTH_COLORS.get(status, "#9e9e9e")
            self.dot.style.text_color = color
            self.dot.tooltip = status
            c["instance"].value = str(row.get("instance", ""))
            c["instance"].tooltip = str(row.get("endpoint") or row.get("instance", ""))
            c["status"].value = status
            c["status"].style.text_color = color
            breaker = row.get("breaker", "closed")
            c["breaker"].value = breaker.replace("_", "-")
            c["breaker"].style.text_color = BREAKER_COLORS.get(breaker, "#57606a")
            enabled = row.get("enabled", status != "drained")
            assert self.drain is not None and self.reset is not None
            self.drain.description = "drain" if enabled else "enable"
            self.drain.tooltip = "take out of rotation" if enabled else "put back in rotation"
            self.drain.button_style = "" if enabled else "warning"
            self.reset.disabled = breaker == "closed"
            self.reset.button_style = "danger" if breaker == "open" else ""
        c["in_flight"].value = fmt_int(row.get("in_flight", 0))
        c["requests"].value = fmt_int(row.get("requests", 0))
        c["success_rate"].value = fmt_rate(row.get("success_rate"))
        for key in ("p50_ms", "p95_ms", "p99_ms"):
            c[key].value = fmt_ms(row.get(key))
        c["extra"].value = _fmt_extra(extra_kind, row)
        err = row.get("last_error")
        if not err and row.get("health_error") and row.get("health", "healthy") != "healthy":
            # an idle instance has no failed calls: say why its health check fails
            err = f"health check: {row['health_error']}"
        c["last_error"].value = _shorten(err)
        c["last_error"].tooltip = str(err) if err else None


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
        self.loop = loop or _find_loop(provider)
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
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []
        self._extra_kind: str | None = None
        self._plot_key: Any = None
        self._snapshot: dict[str, Any] | None = None
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
        self.grid = w.GridBox(
            [],
            layout=w.Layout(
                grid_template_columns=_GRID,
                grid_gap="2px 6px",
                align_items="center",
                overflow="auto",
            ),
        )
        self.grid.add_class("gz-grid")
        self._header = [
            _label(h, "gz-head", f"gz-head-{c}", *(["gz-num"] if c in _NUMERIC else []))
            for c, h, _ in _COLUMNS
        ]
        self.total = _Row(self, "ALL", total=True)
        self.plot = w.HTML(latency_svg({}, window=window))
        self.plot.add_class("gz-latency-plot")
        self.legend = w.HTML("")
        self.widget = w.VBox([w.HTML(_STYLE), header, self.grid, self.plot, self.legend])
        self.widget.add_class("gz-panel")
        self.widget.add_class("gz-provider-" + re.sub(r"[^A-Za-z0-9_-]", "_", name))

        _hook_shell()
        _open_panels.add(self)
        self._feed = _Feed.for_provider(
            provider, self.loop, interval=interval, heartbeat=heartbeat, window=window
        )
        # First picture synchronously, so the displayed panel (and a saved notebook) shows
        # the pool as it is now; from then on the feed pushes updates.
        first = _call_on_loop(
            self.loop, lambda: (provider.status(), latency_series(provider, window))
        )
        self._apply(*first)
        self._on_loop(lambda: self._feed.attach(self))

    # -- display ------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle = dict(bundle)
        bundle["text/plain"] = self.text()
        return bundle

    def text(self) -> str:
        snap = self._snapshot or {}
        totals = snap.get("totals", {})
        return (
            f"<StatusPanel {getattr(self.provider, 'name', '?')}: "
            f"{totals.get('healthy', 0)}/{totals.get('instances', 0)} healthy, "
            f"{totals.get('requests', 0)} requests>"
        )

    def __repr__(self) -> str:
        return self.text()

    # -- state ----------------------------------------------------------------------------
    @property
    def rows(self) -> dict[str, dict[str, str]]:
        """What each row shows now: ``{instance: {column: text}}`` (plus ``ALL``)."""
        with self._lock:
            out = {}
            for key in [*self._order, "ALL"]:
                row = self._rows.get(key) if key != "ALL" else self.total
                if row is None:
                    continue
                vals = {c: getattr(wid, "value", "") for c, wid in row.cells.items()}
                vals["color"] = row.dot.style.text_color or ""
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
            self.updates += 1

    def _apply_locked(self, snap: dict[str, Any], series: dict[str, Any]) -> None:
        rows = snap.get("instances", [])
        kind = _extra_kind(rows)
        if kind != self._extra_kind:
            self._extra_kind = kind
            head = {"tokens": "tokens/s", "runs": "runs / recyc."}.get(kind or "", "")
            self._header[[c for c, _, _ in _COLUMNS].index("extra")].value = head
        order = [r["instance"] for r in rows]
        for ident in order:
            if ident not in self._rows:
                self._rows[ident] = _Row(self, ident)
        for row in rows:
            self._rows[row["instance"]].set(row, kind)
        self.total.set(_aggregate_extras(kind, rows, snap.get("totals", {})), kind, totals=True)
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
            self.legend.value = _legend([k for k, v in series.items() if v])

    # -- controls (notebook thread) -----------------------------------------------------
    def _on_loop(self, fn: Callable[[], Any]) -> None:
        if _on_loop_thread(self.loop):
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
            try:
                if action == "drain":
                    provider.drain(ident)
                    msg = f"{ident} drained"
                elif action == "enable":
                    provider.enable(ident)
                    msg = f"{ident} back in rotation"
                elif action == "reset_breaker":
                    provider.reset_breaker(ident)
                    msg = f"{ident}: breaker reset"
                elif action == "strategy":
                    provider.set_strategy(value)
                    msg = f"strategy: {value}"
                else:  # pragma: no cover - buttons only send the above
                    msg = f"unknown action {action}"
            except Exception as exc:
                msg = f"{action} failed: {exc}"
            self.message.value = msg
            self._feed.refresh_now()

        self._on_loop(run)

    def refresh(self, wait: bool = True) -> None:
        """Refresh every panel of this provider now (from any thread)."""
        if _on_loop_thread(self.loop):
            self._feed.refresh_now()
        elif wait:
            _call_on_loop(self.loop, self._feed.refresh_now)
        else:
            self.loop.call_soon_threadsafe(self._feed.refresh_now)

    def close(self) -> None:
        """Stop updates (unsubscribing from the hub when it was the provider's last panel)
        and close the widgets."""
        if self.closed:
            return
        self.closed = True
        _open_panels.discard(self)
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
            if not _on_loop_thread(self.loop):
                try:
                    done.result(5)
                except concurrent.futures.TimeoutError:  # pragma: no cover - loop stuck
                    log.warning("gleitzeit panel: detaching timed out")
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


class StatusBoard:
    """Panels for every pool of a kernel runtime; pools started later get a panel when they
    appear (the runtime announces them as events, no polling)."""

    def __init__(self, runtime: Any, **panel_opts: Any) -> None:
        self.runtime = runtime
        self.panel_opts = panel_opts
        self.panels: dict[str, StatusPanel] = {}
        self.closed = False
        self._lock = threading.RLock()
        self.empty = w.HTML(
            "<i>no pools running yet: they start on the first %%llm / %%sandbox"
            " (or %gleitzeit add ollama URL)</i>"
        )
        self.widget = w.VBox([])
        self.widget.add_class("gz-board")
        for name, provider in runtime.providers.items():
            self.panels[name] = StatusPanel(provider, loop=runtime.loop, **panel_opts)
        self._layout()
        self._unsubscribe = runtime.subscribe(self._on_runtime_event)

    def _layout(self) -> None:
        with self._lock:
            kids = [p.widget for p in self.panels.values() if not p.closed]
            self.widget.children = kids or [self.empty]

    def _on_runtime_event(self, name: str, event: Any) -> None:
        # Runs on the runtime loop. Only pool-level membership (instance_id None) matters.
        if self.closed or event.kind != "membership" or event.instance_id is not None:
            return
        with self._lock:
            if event.new == "added" and name not in self.panels:
                provider = self.runtime.providers.get(name)
                if provider is not None:
                    self.panels[name] = StatusPanel(
                        provider, loop=self.runtime.loop, **self.panel_opts
                    )
            elif event.new == "removed" and name in self.panels:
                self.panels.pop(name).close()
            else:
                return
        self._layout()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        return f"<StatusBoard {', '.join(self.panels) or 'no pools'}>"

    @property
    def updates(self) -> int:
        return sum(p.updates for p in self.panels.values())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._unsubscribe()
        for panel in list(self.panels.values()):
            panel.close()
        self.widget.close()


def status_panel(target: Any = None, **opts: Any) -> StatusPanel | StatusBoard:
    """A panel for ``target``: a kernel runtime (every pool, now and later; default: the
    kernel's runtime), one provider, or a list/dict of providers. Not displayed yet: return
    it from a cell or pass it to ``display``.

    Re-running the cell that made a panel (same JupyterLab cell id) closes the old panel, so
    re-runs do not leave invisible panels updating in the background."""
    if target is None:
        from .runtime import get_runtime

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
                panel = _ProviderList([StatusPanel(p, **opts) for p in target])
        else:
            panel = StatusPanel(target, **opts)
    cell = _cell_id()
    if cell is not None:
        with _cell_lock:
            old = _by_cell.pop(cell, [])
            _by_cell[cell] = [weakref.ref(panel)]
        for ref in old:
            previous = ref()
            if previous is not None and previous is not panel:
                previous.close()
    return panel


_by_cell: dict[str, list[weakref.ref]] = {}
_cell_lock = threading.Lock()


def _cell_id() -> str | None:
    """The front end's id of the cell being executed (JupyterLab and nbclient send it)."""
    try:
        from ipykernel.kernelbase import Kernel

        if not Kernel.initialized():
            return None
        parent = Kernel.instance().get_parent()
    except Exception:
        return None
    cell = (parent or {}).get("metadata", {}).get("cellId")
    return cell if isinstance(cell, str) and cell else None


class _ProviderList(StatusBoard):
    def __init__(self, panels: list[StatusPanel]) -> None:
        self.runtime = None
        self.panel_opts = {}
        self.panels = {getattr(p.provider, "name", str(k)): p for k, p in enumerate(panels)}
        self.closed = False
        self._lock = threading.RLock()
        self.empty = w.HTML("<i>no pools</i>")
        self.widget = w.VBox([])
        self._layout()
        self._unsubscribe = lambda: None


def show_status(target: Any = None, **opts: Any) -> StatusPanel | StatusBoard:
    """Display a live status panel for ``target`` (see :func:`status_panel`) and return it."""
    from IPython.display import display

    panel = status_panel(target, **opts)
    display(panel)
    return panel
