"""Live status panels: the pools at a glance, as standard ipywidgets.

One :class:`StatusPanel` per provider renders ``provider.status()`` (the same snapshot the
sidebar and ``%gleitzeit status`` read): one row per instance (health dot, breaker, in flight,
requests, success rate, p50/p95/p99, tokens/s or runs/recycled, last error), an aggregate row,
and an SVG plot of p95 latency over the recent window. Buttons drain / re-enable an instance
and reset its breaker; a dropdown switches the strategy.

Live updates without polling: a :class:`~.feed.Feed` per provider subscribes to the hub's
events while at least one panel on that provider is open, and pushes one throttled snapshot to
all of them (see :mod:`.feed`).

Threads: snapshots are taken on the provider's loop (the runtime's background thread, where the
pool's state is mutated), and widget values are set there too. ipywidgets sends a changed value
as a comm message; ipykernel (6 and 7) hands IOPub sends from any thread to its IOPub thread
through a per-thread pipe, so the front end gets the update while the notebook thread is busy
running a long cell. Button clicks arrive on the notebook thread and are marshalled onto the
loop. Closing a panel (its x button or :meth:`StatusPanel.close`) detaches it; the last panel
of a provider unsubscribes from the hub.

Modules: :mod:`.panel` (one provider), :mod:`.board` (several), :mod:`.show` (the entry
points), :mod:`.feed` (the shared subscription), :mod:`.cells` (IPython's cell hooks, re-run
cells), :mod:`.rows` (the grid), :mod:`.plot` (the latency SVG), :mod:`.formatting` (cell
texts), :mod:`.style` (colours, CSS), :mod:`.loop` (which loop runs a pool).
"""

from __future__ import annotations

from .board import StatusBoard
from .cells import close_all
from .formatting import DASH as DASH
from .formatting import fmt_int as fmt_int
from .formatting import fmt_ms as fmt_ms
from .formatting import fmt_rate as fmt_rate
from .panel import StatusPanel
from .plot import latency_series as latency_series
from .plot import latency_svg
from .rows import row_class as row_class
from .show import show_status, status_panel
from .style import BREAKER_COLORS, HEALTH_COLORS
from .style import PALETTE as PALETTE

# The ``X as X`` imports: public helpers importable from here too, outside ``__all__``.
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
