"""The shared per-provider subscription: one throttled refresh feeds every open panel.

Live updates without polling: a :class:`Feed` per provider subscribes to the hub's events
(status, breaker, membership, strategy and the coalesced ~1/s ``metrics`` event) while at
least one panel on that provider is open. An event schedules one refresh on the provider's
loop, throttled to ``interval`` (1 s): the feed takes *one* snapshot and applies it to every
open panel, so several panels always show the same numbers. Between events (an idle pool, or
one long call) a slow ``heartbeat`` refresh keeps the plot's time axis moving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .plot import latency_series

if TYPE_CHECKING:
    from .panel import StatusPanel

log = logging.getLogger(__name__)


class Feed:
    """One subscription per provider, shared by its open panels (state touched on the loop)."""

    _feeds: dict[int, Feed] = {}
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
    def for_provider(cls, provider: Any, loop: asyncio.AbstractEventLoop, **opts: Any) -> Feed:
        with cls._lock:
            feed = cls._feeds.get(id(provider))
            if feed is None or feed.provider is not provider:
                feed = cls._feeds[id(provider)] = cls(provider, loop, **opts)
            return feed

    @classmethod
    def open_feeds(cls) -> list[Feed]:
        with cls._lock:
            return list(cls._feeds.values())

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
        self._cancel_timer()
        with Feed._lock:
            if Feed._feeds.get(id(self.provider)) is self:
                del Feed._feeds[id(self.provider)]

    def on_event(self, event: Any) -> None:
        # Runs on the loop for every hub event: cheap, never blocks. Bursts coalesce into one
        # refresh at most every ``interval`` seconds; a change of what is available (status,
        # breaker, membership) within a quarter second, so counts follow failures at once.
        urgent = getattr(event, "kind", None) in ("status", "breaker", "membership")
        interval = min(self.interval, 0.25) if urgent else self.interval
        self.schedule(max(0.0, self.last + interval - self.loop.time()))

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
        # Calls starting and queueing come as the hub's coalesced "metrics" events; the
        # heartbeat only moves the latency plot's time axis along.
        self.schedule(self.heartbeat)

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
        self._cancel_timer()
        self.tick()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.timer_at = float("inf")
