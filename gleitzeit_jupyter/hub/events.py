"""Hub events: status, breaker and membership changes, pushed to subscribers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EVENT_KINDS", "EventBus", "HubEvent"]

log = logging.getLogger(__name__)

EVENT_KINDS = ("status", "breaker", "membership", "strategy", "metrics")


@dataclass(frozen=True)
class HubEvent:
    kind: str
    provider: str
    instance_id: str | None = None
    old: Any = None
    new: Any = None
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "provider": self.provider,
            "instance_id": self.instance_id,
            "old": getattr(self.old, "value", self.old),
            "new": getattr(self.new, "value", self.new),
            "at": self.at,
        }


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Callable[[HubEvent], Any]] = []

    def subscribe(self, callback: Callable[[HubEvent], Any]) -> Callable[[], None]:
        """Register ``callback``; the returned function unsubscribes it."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            try:
                self._subscribers.remove(callback)
            except ValueError:
                pass

        return unsubscribe

    def emit(self, event: HubEvent) -> None:
        # A subscriber's bug must not break the pool: log it and go on.
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("gleitzeit event subscriber %r failed", callback)

    def __len__(self) -> int:
        return len(self._subscribers)
