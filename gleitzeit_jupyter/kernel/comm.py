"""Kernel side of the JupyterLab sidebar: the ``gleitzeit`` comm target.

The labextension opens a comm with target ``gleitzeit`` to the active notebook's kernel. This
module answers it with ``{"type": "snapshot", "providers": {name: provider.status()}}``
messages, pushed

* when a hub event arrives (status, breaker, membership, strategy, metrics), throttled to at
  most one snapshot per ``min_interval`` seconds,
* after every cell (IPython's ``post_run_cell``), throttled the same way,
* on a heartbeat: at least every ``heartbeat`` seconds, changed or not.

Front end to kernel: ``{"type": "refresh"}`` asks for a snapshot now; ``{"type": "action",
"provider": name, "action": "drain" | "enable" | "reset_breaker" | "strategy", "instance": id,
"value": ...}`` runs the matching provider method and answers with ``{"type": "action_result",
"ok": bool, "message": str, ...}`` followed by a fresh snapshot.

Threads: comm messages from the front end arrive on the kernel's main (shell) thread; hub
events arrive on the runtime's background loop thread. Snapshots are always built on the
runtime loop (where the providers' state is mutated) and sent from there: ipykernel's IOPub
socket is a ``BackgroundSocket`` whose sends are handed to the IOPub thread through a
per-thread pipe, so ``comm.send`` is safe from any thread.

When registered, the bridge also opens a comm from the kernel to the front end ("announce"),
so a sidebar that found no ``gleitzeit`` target earlier (the extension was loaded later)
switches to the live view without polling.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "TARGET_NAME",
    "CommBridge",
    "get_bridge",
    "register_comm_target",
    "run_action",
    "unregister",
    "unregister_comm_target",
]

log = logging.getLogger(__name__)

TARGET_NAME = "gleitzeit"
PROTOCOL_VERSION = 1

#: action name in the message -> provider method name
_ACTIONS = {
    "drain": "drain",
    "enable": "enable",
    "reset_breaker": "reset_breaker",
    "strategy": "set_strategy",
}

_DONE = {
    "drain": "{} drained",
    "enable": "{} back in rotation",
    "reset_breaker": "{}: breaker reset",
    "strategy": "strategy: {}",
}


def run_action(provider: Any, action: str, target: Any) -> str:
    """Run one operator control on ``provider`` and say what it did; raises what the
    provider raises. The sidebar (through this comm), the panels' buttons and ``%gleitzeit
    drain|enable|reset ID`` all come here, so each does exactly what the others do. Call it
    on the provider's loop; ``target`` is the instance id (the strategy for "strategy")."""
    method_name = _ACTIONS.get(str(action))
    if method_name is None:
        raise ValueError(f"unknown action {action!r}; use one of {sorted(_ACTIONS)}")
    getattr(provider, method_name)(target)
    return _DONE[action].format(target)


#: Hub events that can change what is available: pushed within ``_URGENT`` seconds rather
#: than the ``min_interval`` throttle, so counts follow failures within a second.
_AVAILABILITY_EVENTS = ("status", "breaker", "membership")
_URGENT = 0.25

_bridge: CommBridge | None = None
_bridge_lock = threading.Lock()


def _kernel_running() -> bool:
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:  # pragma: no cover - ipykernel is a dependency
        return False
    return bool(Kernel.initialized())


class CommBridge:
    """Pushes provider snapshots of one kernel runtime to every open ``gleitzeit`` comm."""

    def __init__(
        self,
        runtime: Any,
        *,
        min_interval: float = 1.0,
        heartbeat: float = 5.0,
        max_comms: int = 16,
    ) -> None:
        self.runtime = runtime
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.max_comms = max_comms
        self._comms: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._seq = 0
        # the fields below are touched on the runtime loop only
        self._last_sent = -float("inf")
        self._pending: asyncio.TimerHandle | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], Any] | None = None
        self._ipython: Any = None
        self._started = False

    # ---------------------------------------------------------------- lifecycle
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.runtime.loop

    def start(self, ipython: Any = None) -> None:
        if self._started:
            return
        self._started = True
        unsubscribe = self.runtime.subscribe(self._on_hub_event)
        self._unsubscribe = unsubscribe if callable(unsubscribe) else None
        self.loop.call_soon_threadsafe(self._start_heartbeat)
        if ipython is not None:
            self._ipython = ipython
            ipython.events.register("post_run_cell", self._post_run_cell)

    def stop(self) -> None:
        """Unsubscribe, stop the heartbeat and close every comm."""
        if not self._started:
            return
        self._started = False
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:  # pragma: no cover - defensive
                log.exception("gleitzeit comm: unsubscribe failed")
            self._unsubscribe = None
        if self._ipython is not None:
            try:
                self._ipython.events.unregister("post_run_cell", self._post_run_cell)
            except ValueError:
                pass
            self._ipython = None
        loop = self.loop
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stop_on_loop)
            except RuntimeError:  # loop closed meanwhile
                pass
        with self._lock:
            comms = list(self._comms.values())
            self._comms.clear()
        for c in comms:
            try:
                c.close(data={"type": "closing"})
            except Exception:  # pragma: no cover - defensive
                log.debug("gleitzeit comm: close failed", exc_info=True)

    def _stop_on_loop(self) -> None:
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    # ---------------------------------------------------------------- comms
    @property
    def comm_count(self) -> int:
        with self._lock:
            return len(self._comms)

    def add_comm(self, c: Any) -> None:
        """Track an open comm (opened by the front end or announced by the kernel)."""
        evicted = []
        with self._lock:
            self._comms[c.comm_id] = c
            while len(self._comms) > self.max_comms:
                oldest = next(iter(self._comms))
                evicted.append(self._comms.pop(oldest))
        c.on_msg(self._on_comm_msg)
        c.on_close(self._on_comm_close)
        for old in evicted:
            try:
                old.close()
            except Exception:  # pragma: no cover - defensive
                log.debug("gleitzeit comm: closing an evicted comm failed", exc_info=True)
        self.request_snapshot(immediate=True)

    def target_callback(self, c: Any, open_msg: dict[str, Any]) -> None:
        """``comm_open`` from the front end (runs on the kernel's shell thread)."""
        self.add_comm(c)

    def announce(self) -> None:
        """Open a comm from the kernel so waiting sidebars switch to the live view."""
        import comm as comm_pkg

        c = comm_pkg.create_comm(
            target_name=TARGET_NAME,
            data={"type": "hello", "version": PROTOCOL_VERSION},
        )
        self.add_comm(c)

    def _on_comm_close(self, msg: dict[str, Any]) -> None:
        comm_id = msg.get("content", {}).get("comm_id")
        with self._lock:
            self._comms.pop(comm_id, None)

    def _on_comm_msg(self, msg: dict[str, Any]) -> None:
        content = msg.get("content", {})
        data = content.get("data") or {}
        comm_id = content.get("comm_id")
        kind = data.get("type")
        if kind == "refresh":
            self.request_snapshot(immediate=True)
        elif kind == "action":
            self._submit(self._run_action(comm_id, data))
        else:
            self._send_to(comm_id, {"type": "error", "message": f"unknown message type {kind!r}"})

    def _send_to(self, comm_id: str | None, data: dict[str, Any]) -> None:
        with self._lock:
            c = self._comms.get(comm_id) if comm_id else None
        if c is not None:
            self._safe_send(c, data)

    def _safe_send(self, c: Any, data: dict[str, Any]) -> None:
        try:
            c.send(data)
        except Exception:
            log.debug("gleitzeit comm: send failed, dropping comm", exc_info=True)
            with self._lock:
                self._comms.pop(getattr(c, "comm_id", None), None)

    def _broadcast(self, data: dict[str, Any]) -> None:
        with self._lock:
            comms = list(self._comms.values())
        for c in comms:
            self._safe_send(c, data)

    def _submit(self, coro: Any) -> None:
        try:
            asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # loop closed
            coro.close()

    # ---------------------------------------------------------------- actions
    async def _run_action(self, comm_id: str | None, data: dict[str, Any]) -> None:
        provider_name = data.get("provider")
        action = data.get("action")
        instance = data.get("instance")
        reply: dict[str, Any] = {
            "type": "action_result",
            "provider": provider_name,
            "action": action,
            "instance": instance,
            "request": data.get("request"),
        }
        try:
            if str(action) not in _ACTIONS:
                raise ValueError(f"unknown action {action!r}; use one of {sorted(_ACTIONS)}")
            provider = dict(self.runtime.providers).get(provider_name)
            if provider is None:
                raise ValueError(f"no provider named {provider_name!r} in this kernel")
            arg = data.get("value") if action == "strategy" else instance
            message = run_action(provider, str(action), arg)
        except Exception as exc:
            reply.update(ok=False, message=f"{action} failed: {exc}")
        else:
            reply.update(ok=True, message=message)
        self._send_to(comm_id, reply)
        self._request(immediate=True)

    # ---------------------------------------------------------------- snapshots
    def _on_hub_event(self, provider_name: str, event: Any) -> None:
        """Runtime subscriber: runs on the runtime loop, must not block."""
        urgent = getattr(event, "kind", None) in _AVAILABILITY_EVENTS
        self._request(interval=min(self.min_interval, _URGENT) if urgent else None)

    def _post_run_cell(self, *args: Any) -> None:
        self.request_snapshot()

    def request_snapshot(self, immediate: bool = False) -> None:
        """Thread-safe: push a snapshot soon (throttled unless ``immediate``)."""
        loop = self.loop
        if loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._request, immediate)
        except RuntimeError:  # loop closed meanwhile
            pass

    def _request(self, immediate: bool = False, interval: float | None = None) -> None:
        """On the runtime loop: flush now, or schedule one flush at the throttle boundary
        (``interval`` after the last push; default ``min_interval``)."""
        if not self._started:
            return
        now = time.monotonic()
        due = self._last_sent + (self.min_interval if interval is None else interval)
        if immediate or now >= due:
            if self._pending is not None:
                self._pending.cancel()
                self._pending = None
            self._flush()
        elif self._pending is None or self._pending.when() > self.loop.time() + (due - now):
            if self._pending is not None:
                self._pending.cancel()
            self._pending = self.loop.call_later(due - now, self._flush_pending)

    def _flush_pending(self) -> None:
        self._pending = None
        self._flush()

    def _collect(self) -> dict[str, Any]:
        providers: dict[str, Any] = {}
        for name, provider in list(dict(self.runtime.providers).items()):
            try:
                providers[name] = provider.status()
            except Exception as exc:
                providers[name] = {
                    "name": name,
                    "error": f"status() failed: {exc}",
                    "instances": [],
                }
        return providers

    def _message(self, providers: dict[str, Any]) -> dict[str, Any]:
        from ..hub.balancing import STRATEGIES

        self._seq += 1
        return {
            "type": "snapshot",
            "version": PROTOCOL_VERSION,
            "seq": self._seq,
            "time": time.time(),
            "strategies": list(STRATEGIES),
            "providers": providers,
        }

    def snapshot(self) -> dict[str, Any]:
        """The message sent to the front end (call it on the runtime loop)."""
        return self._message(self._collect())

    def _flush(self) -> None:
        self._last_sent = time.monotonic()
        if not self.comm_count:
            return
        try:
            message = self.snapshot()
        except Exception:
            log.exception("gleitzeit comm: building the snapshot failed")
            return
        self._broadcast(message)

    def _start_heartbeat(self) -> None:
        if self._started and self._heartbeat_task is None:
            self._heartbeat_task = self.loop.create_task(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        # Changes arrive as hub events (the hub's coalesced "metrics" event covers calls
        # starting and queueing too); this only guarantees a push every ``heartbeat`` seconds.
        while True:
            await asyncio.sleep(max(0.1, self._last_sent + self.heartbeat - time.monotonic()))
            if self.comm_count and self._pending is None:
                if time.monotonic() - self._last_sent >= self.heartbeat:
                    self._request()


# -------------------------------------------------------------------- module API
def get_bridge() -> CommBridge | None:
    """The bridge registered in this kernel, if any."""
    return _bridge


def register_comm_target(
    ipython: Any = None, *, runtime: Any = None, announce: bool = True, **options: Any
) -> CommBridge | None:
    """Register the ``gleitzeit`` comm target in the running kernel.

    Call it from ``load_ipython_extension(ipython)``. Idempotent: a second call replaces the
    first registration. Returns ``None`` (and does nothing) outside an ipykernel kernel, e.g.
    in terminal IPython. ``runtime`` defaults to
    ``gleitzeit_jupyter.kernel.runtime.get_runtime()``; ``options`` go to :class:`CommBridge`.
    """
    global _bridge
    if not _kernel_running():
        return None
    if runtime is None:
        from .runtime import get_runtime

        runtime = get_runtime()
    import comm as comm_pkg

    with _bridge_lock:
        if _bridge is not None:
            _unregister_locked()
        bridge = CommBridge(runtime, **options)
        bridge.start(ipython)
        comm_pkg.get_comm_manager().register_target(TARGET_NAME, bridge.target_callback)
        _bridge = bridge
    if announce:
        try:
            bridge.announce()
        except Exception:
            log.debug("gleitzeit comm: announce failed", exc_info=True)
    return bridge


def _unregister_locked() -> None:
    global _bridge
    bridge, _bridge = _bridge, None
    if bridge is None:
        return
    try:
        import comm as comm_pkg

        manager = comm_pkg.get_comm_manager()
        if manager.targets.get(TARGET_NAME) == bridge.target_callback:
            manager.unregister_target(TARGET_NAME, bridge.target_callback)
    except Exception:  # pragma: no cover - defensive
        log.debug("gleitzeit comm: unregister_target failed", exc_info=True)
    bridge.stop()


def unregister_comm_target(ipython: Any = None) -> None:
    """Undo :func:`register_comm_target` (``unload_ipython_extension``); closes open comms."""
    with _bridge_lock:
        _unregister_locked()


#: short alias used by the extension loader
unregister = unregister_comm_target
