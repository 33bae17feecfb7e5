"""The kernel-resident runtime: one background asyncio loop per kernel that owns the providers.

The notebook thread is synchronous; the providers are async and keep health checks and
metrics running between cells. :class:`Runtime` bridges the two: work is submitted to the
loop thread and the notebook thread waits for it in short slices, so a kernel interrupt
(SIGINT -> ``KeyboardInterrupt`` in the main thread) lands promptly, cancels the coroutine on
the loop (closing HTTP streams, killing sandbox workers) and waits briefly for that cleanup.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..hub.events import HubEvent
from .config import DEFAULT_OLLAMA_HOST, Gleitzeit
from .loop_thread import LoopThread

__all__ = ["DEFAULT_OLLAMA_HOST", "Gleitzeit", "Runtime", "get_runtime", "reset_runtime"]

log = logging.getLogger(__name__)

T = TypeVar("T")


Subscriber = Callable[[str, Any], Any]


class Runtime(LoopThread):
    """The background loop thread and the providers it owns."""

    def __init__(self, config: Gleitzeit | None = None) -> None:
        self.config_owner = config if config is not None else Gleitzeit()
        self._providers: dict[str, Any] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._subscribers: list[Subscriber] = []
        # One lock for creating providers: two cells (or a widget callback) racing to create
        # the same pool must end up with one pool.
        self._create_lock = threading.RLock()
        super().__init__("gleitzeit-runtime")

    # ------------------------------------------------------------------ providers
    @property
    def providers(self) -> dict[str, Any]:
        """Providers already created, by name (a copy: safe to iterate)."""
        return dict(self._providers)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """``callback(provider_name, HubEvent)`` for every provider, now and later.

        Runs on the loop thread; it must not block.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _fan_out(self, name: str) -> Callable[[Any], None]:
        def deliver(event: Any) -> None:
            for cb in list(self._subscribers):
                try:
                    cb(name, event)
                except Exception:
                    # One broken subscriber (a closed comm) must not starve the others.
                    log.exception("gleitzeit runtime subscriber %r failed", cb)

        return deliver

    def _announce(self, name: str, what: str) -> None:
        # Membership of the runtime itself (a provider appeared or went away) as an event, so
        # panels learn about new pools without polling.
        event = HubEvent(kind="membership", provider=name, old=None, new=what)
        self.loop.call_soon_threadsafe(self._fan_out(name), event)

    def get_or_create(self, name: str, factory: Callable[[], Any]) -> Any:
        """The provider ``name``, created by ``factory()`` and initialized on first use."""
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        with self._create_lock:
            provider = self._providers.get(name)
            if provider is not None:
                return provider
            self.check_caller()
            provider = factory()
            try:
                self.run(provider.initialize())
            except BaseException:
                # A half-initialized pool may hold connections or containers already.
                with contextlib.suppress(BaseException):
                    self.run(provider.shutdown(), timeout=30)
                raise
            self._providers[name] = provider
            self._unsubscribe[name] = provider.subscribe(self._fan_out(name))
        self._announce(name, "added")
        return provider

    def ollama(self) -> Any:
        """The Ollama pool, created from the configuration on first use."""
        return self.get_or_create("ollama", self._make_ollama)

    def _make_ollama(self) -> Any:
        from ..providers.ollama import OllamaProvider

        cfg = self.config_owner
        return OllamaProvider(
            hosts=list(cfg.ollama_hosts),
            auto_discover=bool(cfg.auto_discover),
            strategy=cfg.strategy,
            default_model=cfg.default_model or None,
        )

    def openai(self) -> Any:
        """The pool of OpenAI-compatible servers, created from ``Gleitzeit.openai_hosts`` on
        first use (empty at first when none are set: ``%gleitzeit add openai URL`` grows it)."""
        return self.get_or_create("openai", self._make_openai)

    def _make_openai(self) -> Any:
        from ..providers.openai import OpenAIProvider

        cfg = self.config_owner
        return OpenAIProvider(
            hosts=list(cfg.openai_hosts),
            api_key=cfg.openai_api_key or None,
            strategy=cfg.strategy,
        )

    def llm(self, model: str | None = None) -> Any:
        """What ``%%llm`` calls: a router over the LLM pools (see :mod:`.llm_pools`). Only
        the pool a ``POOL:MODEL`` names is started; otherwise every configured one (the
        OpenAI pool when ``openai_hosts`` is set or it is already running)."""
        from .llm_pools import LlmRouter, split_pool

        pool, _ = split_pool(model)
        pools: dict[str, Any] = {}
        if pool in (None, "ollama"):
            pools["ollama"] = self.ollama()
        if pool in (None, "openai") and self._openai_wanted():
            pools["openai"] = self.openai()
        return LlmRouter(pools)  # a POOL: prefix naming no configured pool: its error says so

    def _openai_wanted(self) -> bool:
        return "openai" in self._providers or bool(self.config_owner.openai_hosts)

    def sandbox(
        self, *, image: str | None = None, mem: str | None = None, network: bool | str = False
    ) -> Any:
        """The sandbox pool; non-default image / memory / network get a pool of their own
        (a container's limits are fixed when it starts, so they cannot be per call)."""
        from ..providers.sandbox.image import DEFAULT_IMAGE

        default_image = self.config_owner.sandbox_image or DEFAULT_IMAGE
        image = image or default_image
        parts = [f"image={image}"] if image != default_image else []
        if mem:
            parts.append(f"mem={mem}")
        if network:
            parts.append("network" if network is True else f"network={network}")
        name = "sandbox" if not parts else f"sandbox[{','.join(parts)}]"
        return self.get_or_create(
            name, lambda: self._make_sandbox(image=image, mem=mem, network=network)
        )

    def _make_sandbox(self, *, image: str | None, mem: str | None, network: bool | str) -> Any:
        from ..providers.sandbox import PythonProvider

        cfg = self.config_owner
        options: dict[str, Any] = {}
        if mem:
            options["mem_limit"] = mem
        return PythonProvider(
            max_containers=cfg.sandbox_max_containers,
            image=image or None,
            network=network,
            timeout=cfg.sandbox_timeout,
            docker_hosts=[cfg.docker_host] if cfg.docker_host else None,
            runtime=cfg.sandbox_runtime or None,
            **options,
        )

    def swap_provider(self, name: str, factory: Callable[[], Any]) -> Any:
        """Put a new provider under ``name``; the old one finishes what it holds, then stops.

        New calls reach the new provider at once; calls already running or queued on the old
        one complete there (it is shut down only once it has neither), so none is lost.
        """
        self.check_caller()
        provider = factory()
        self.run(provider.initialize())
        with self._create_lock:
            old = self._providers.get(name)
            unsub = self._unsubscribe.pop(name, None)
            self._providers[name] = provider
            self._unsubscribe[name] = provider.subscribe(self._fan_out(name))
        if unsub is not None:
            with contextlib.suppress(Exception):
                unsub()
        if old is not None:
            asyncio.run_coroutine_threadsafe(_retire(old), self.loop)
        self._announce(name, "added")
        return provider

    def discard_provider(self, name: str) -> None:
        """Shut ``name`` down and forget it (no-op when it does not exist)."""
        provider = self._providers.pop(name, None)
        unsub = self._unsubscribe.pop(name, None)
        if unsub is not None:
            with contextlib.suppress(Exception):
                unsub()
        if provider is None:
            return
        try:
            if threading.current_thread() is self.thread:
                self.loop.create_task(provider.shutdown())
            else:
                self.run(provider.shutdown(), timeout=60)
        except Exception:
            log.exception("gleitzeit: shutting down provider %s failed", name)
        self._announce(name, "removed")

    # ------------------------------------------------------------------ lifecycle
    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop every provider (containers removed, connections closed), the loop, the thread."""
        if self.closed:
            return
        for name in list(self._providers):
            self.discard_provider(name)
        self._subscribers.clear()
        self.stop(timeout)


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime(config: Gleitzeit | None = None) -> Runtime:
    """The kernel's runtime, created (with its loop thread) on first call.

    ``config`` is used only when the runtime is created; the extension loader passes the
    shell-registered :class:`Gleitzeit` so ``%config`` reaches it.
    """
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.closed:
            if config is None:
                config = _shell_config()
            _runtime = Runtime(config)
        return _runtime


def current_runtime() -> Runtime | None:
    """The runtime if one is running, without creating it."""
    rt = _runtime
    return rt if rt is not None and not rt.closed else None


def reset_runtime() -> None:
    """Shut the runtime down (if any); the next :func:`get_runtime` starts a fresh one."""
    global _runtime
    with _runtime_lock:
        rt, _runtime = _runtime, None
    if rt is not None:
        rt.shutdown()


def _shell_config() -> Gleitzeit:
    """The :class:`Gleitzeit` registered on the running IPython shell, or a fresh one."""
    from IPython import get_ipython  # imported late: the module loads outside IPython too

    shell = get_ipython()
    if shell is None:
        return Gleitzeit()
    for c in getattr(shell, "configurables", []):
        if isinstance(c, Gleitzeit):
            return c
    cfg = Gleitzeit(parent=shell)
    shell.configurables.append(cfg)
    return cfg


# The kernel exits (restart, shutdown): stop containers before the interpreter goes away.
atexit.register(reset_runtime)


async def _retire(provider: Any) -> None:
    """Shut ``provider`` down once nothing runs or waits on it any more."""
    # The pool offers no event for "queue empty and idle"; a slow poll costs nothing here.
    while len(provider.calls.queue) or any(i.in_flight for i in provider.instances):  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    try:
        await provider.shutdown()
    except Exception:
        log.exception("gleitzeit: retiring a replaced provider failed")
