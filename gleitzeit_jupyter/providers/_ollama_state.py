"""What OllamaProvider knows about each Ollama server (``instance.handle``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..hub import ResourceInstance

__all__ = ["State", "state"]

TPS_SAMPLES = 64  # recent calls behind an instance's tokens_per_s (bounded memory)


@dataclass
class State:
    """What the provider knows about one server (lives in ``instance.handle``)."""

    client: httpx.AsyncClient
    transport: httpx.AsyncHTTPTransport  # the client's own (bounded pool), for the hot path
    # Health checks and model refreshes use their own connection: behind calls in the call
    # pool a probe of a busy server would wait for a free connection, time out, and eject a
    # healthy server for being busy.
    probe: httpx.AsyncClient
    url: str
    # built once: joining a path to base_url costs httpx ~85 us per call on a slow box
    urls: dict[str, httpx.URL] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)  # the client's timeouts
    models: set[str] | None = None  # None: /api/tags never answered yet
    loaded: set[str] = field(default_factory=set)
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)
    refreshed_at: float = float("-inf")
    busy_until: float = 0.0
    # model -> (digest, capabilities from /api/show); a new digest is asked again
    capabilities: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    skipped: str | None = None  # why the last call this instance could not take went elsewhere
    samples: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=TPS_SAMPLES))


def state(instance: ResourceInstance) -> State:
    return instance.handle  # type: ignore[no-any-return]
