"""The panel's grid: its columns and the widgets of one instance row (or the aggregate)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from .formatting import fmt_age, fmt_extra, fmt_int, fmt_ms, fmt_rate, shorten
from .style import BREAKER_COLORS, HEALTH_COLORS, css_class

if TYPE_CHECKING:
    from .panel import StatusPanel

COLUMNS = (
    # (key, header, width). Widths live in the panel's CSS (style.py), which drops the
    # low-priority columns when the panel is narrow; GRID is the full-width template.
    ("dot", "", "16px"),
    # its whole name up to half the width; a longer one wraps rather than push the buttons out
    ("instance", "instance", "fit-content(50%)"),
    ("status", "health", "minmax(64px, max-content)"),
    ("breaker", "breaker", "minmax(64px, max-content)"),
    ("in_flight", "in flight", "minmax(52px, max-content)"),
    ("requests", "requests", "minmax(56px, max-content)"),
    ("success_rate", "success", "minmax(52px, max-content)"),
    ("p50_ms", "p50", "minmax(56px, max-content)"),
    ("p95_ms", "p95", "minmax(56px, max-content)"),
    ("p99_ms", "p99", "minmax(56px, max-content)"),
    ("extra", "", "minmax(56px, max-content)"),
    ("last_error", "last error", "minmax(40px, 3fr)"),
    ("actions", "", "max-content"),
)
NUMERIC = ("in_flight", "requests", "success_rate", "p50_ms", "p95_ms", "p99_ms", "extra")
#: Columns dropped first when the panel is narrow, in that order (buttons never are).
OPTIONAL = (
    "p50_ms",
    "p99_ms",
    "extra",
    "in_flight",
    "requests",
    "success_rate",
    "breaker",
    "p95_ms",
    "status",  # last: the dot still shows the health by its colour
)
GRID = " ".join(width for _, _, width in COLUMNS)


def row_class(instance_id: str) -> str:
    """CSS class on every cell of an instance's row (``gz-row-ALL`` for the aggregate)."""
    return css_class("gz-row-", instance_id)


def cell_label(text: str = "", *classes: str, tooltip: str | None = None) -> w.Label:
    label = w.Label(text, layout=w.Layout(min_width="0", overflow="hidden"))
    for c in classes:
        label.add_class(c)
    if tooltip:
        label.tooltip = tooltip
    return label


#: Cells whose full text shows on hover. ipywidgets 8 puts a Label's ``tooltip`` on its
#: (absent) description, not on the label, so these are HTML cells with a ``title``.
HOVER = ("instance", "last_error")


def hover_cell(*classes: str) -> w.HTML:
    cell = w.HTML("", layout=w.Layout(min_width="0", overflow="hidden"))
    for c in classes:
        cell.add_class(c)
    return cell


def set_hover(cell: w.HTML, text: str, title: str | None) -> None:
    """Show ``text`` with ``title`` on hover (both escaped)."""
    attr = f' title="{html.escape(title)}"' if title else ""
    cell.value = f"<span{attr}>{html.escape(text)}</span>" if text else ""


class Row:
    """The widgets of one instance row (or the aggregate row). ``text`` holds the plain
    text of the hover cells, ``title`` their hover text."""

    def __init__(self, panel: StatusPanel, key: str, total: bool = False) -> None:
        self.key = key
        self.total = total
        self.error_old = False
        self.text: dict[str, str] = {}
        self.title: dict[str, str] = {}
        kind = "total" if total else "inst"
        self.cells: dict[str, w.Widget] = {}
        for col, _, _ in COLUMNS:
            if col == "actions":
                continue
            classes = [f"gz-cell-{col}", f"gz-{kind}", row_class(key)]
            if col in NUMERIC:
                classes.append("gz-num")
            if col == "dot":
                classes.append("gz-dot")
            if col == "last_error":
                classes.append("gz-err")
            if total:
                classes.append("gz-total")
            self.cells[col] = hover_cell(*classes) if col in HOVER else cell_label("", *classes)
        self.dot: w.Label = self.cells["dot"]  # type: ignore[assignment]
        if total:
            self.cells["dot"].value = "\u03a3"
            self._hover("instance", "ALL", "every instance of the pool")
            self.actions: w.Widget = cell_label("")
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
        return [self.cells[c] if c != "actions" else self.actions for c, _, _ in COLUMNS]

    def _hover(self, col: str, text: str, title: str | None) -> None:
        if self.text.get(col) != text or self.title.get(col) != (title or ""):
            set_hover(self.cells[col], text, title)  # type: ignore[arg-type]
            self.text[col], self.title[col] = text, title or ""

    def set(self, row: dict[str, Any], extra_kind: str | None, totals: bool = False) -> None:
        c = self.cells
        if totals:
            # the snapshot's own count, the one the sidebar and the status bar show
            available = row.get("available", row.get("healthy", 0))
            c["status"].value = f"{available}/{row.get('instances', 0)} ok"
            c["breaker"].value = breaker_summary(row)
        else:
            status = row.get("status", "")
            color = HEALTH_COLORS.get(status, "#9e9e9e")
            self.dot.style.text_color = color
            self.dot.tooltip = status
            ident = str(row.get("instance", ""))
            endpoint = row.get("endpoint")
            # the full name on hover: the endpoint when it holds the id, else both
            hover = endpoint if endpoint and ident in endpoint else ident
            if endpoint and ident not in endpoint:
                hover = f"{ident} \u00b7 {endpoint}"
            self._hover("instance", str(row.get("label") or ident), hover)
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
        c["extra"].value = fmt_extra(extra_kind, row)
        text, full, fresh = error_text(row)
        self._hover("last_error", text, full or None)
        self.error_old = bool(text) and not fresh
        # add_class / remove_class do nothing when the class is already (not) there
        if self.error_old:
            c["last_error"].add_class("gz-err-old")
        else:
            c["last_error"].remove_class("gz-err-old")


def breaker_summary(totals: dict[str, Any]) -> str:
    """The ALL row's breaker cell: open and half-open counted apart, as the rows show them."""
    parts = []
    if totals.get("open_breakers"):
        parts.append(f"{totals['open_breakers']} open")
    if totals.get("half_open_breakers"):
        parts.append(f"{totals['half_open_breakers']} half-open")
    return ", ".join(parts) or "closed"


def error_text(row: dict[str, Any]) -> tuple[str, str, bool]:
    """(cell text, full text for the tooltip, fresh?) of a row's last error.

    A call's error shows with its age (``12 s ago: ...``) and stays *fresh* (coloured) for
    ``ERROR_FRESH_S``; a failing health check is always fresh (it is failing now)."""
    err = row.get("last_error")
    if err:
        age = row.get("last_error_age_s")
        when = f"{fmt_age(age)}: " if age is not None else ""
        fresh = bool(row.get("error_fresh", True)) or row.get("health") not in (None, "healthy")
        return shorten(when + str(err)), when + str(err), fresh
    if row.get("health_error") and row.get("health", "healthy") != "healthy":
        # an idle instance has no failed calls: say why its health check fails
        full = f"health check: {row['health_error']}"
        return shorten(full), full, True
    return "", "", False
