"""OllamaProvider: a pool of Ollama servers behind one HubProvider, spoken to over httpx.

Routing knows the fleet: an instance takes a call only if ``/api/tags`` lists the model and
``/api/show`` says the model can serve it (vision for images, thinking, tools, embedding);
the default ``fleet`` strategy then sends it where it is expected to finish first, from each
server's learned speed, slots, queue and models in memory (:mod:`gleitzeit_jupyter.hub.fleet`).
A 503 (Ollama's queue full) and a 404 for a model another instance lists move the call
elsewhere without counting as a failure. See docs/pools.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..hub import (
    HubError,
    HubProvider,
    ResourceDeclined,
    ResourceFailed,
    ResourceInstance,
    UserError,
)
from ..hub.fleet import Fleet
from . import _bounded
from . import _ollama_wire as wire
from ._bounded import ResponseLimits
from ._ollama_catalog import OllamaCatalogMixin
from ._ollama_discovery import DEFAULT_SCAN_PORTS, OllamaDiscoveryMixin
from ._ollama_routing import OllamaRoutingMixin
from ._ollama_state import State
from ._ollama_state import state as _state
from .hosts import DEFAULT_HOST, env_hosts, parse_host

__all__ = ["OllamaConfig", "OllamaProvider", "OllamaProviderStreamlined", "ResponseLimits"]

_FIRST_BUSY_PAUSE = 0.05  # seconds; doubled up to busy_backoff while a lone server is busy


# Defined here, not beside State: saved pools name their config class by module.
@dataclass(frozen=True)
class OllamaConfig:
    """One Ollama server.

    ``num_parallel``: the calls it runs at once (its OLLAMA_NUM_PARALLEL; the API does not
    report it); the ``fleet`` strategy divides the queue there by it. None: learned, as the
    most calls seen running there at once (Ollama's durations say when each one ran).
    ``max_loaded_models``: models it holds in memory at once (OLLAMA_MAX_LOADED_MODELS);
    None: learned when ``/api/ps`` shows an eviction. ``max_concurrency``: a hard cap on calls
    the hub sends it at once, so the hub rather than Ollama queues; ``None``: none.
    """

    host: str = "http://127.0.0.1:11434"
    num_parallel: int | None = None
    max_concurrency: int | None = None
    max_loaded_models: int | None = None
    max_connections: int = 32
    weight: float = 1.0
    tags: frozenset[str] = frozenset()

    @property
    def url(self) -> str:
        return parse_host(self.host)


class OllamaProvider(
    OllamaDiscoveryMixin, OllamaCatalogMixin, OllamaRoutingMixin, HubProvider[OllamaConfig]
):
    """Pool of Ollama servers: ``llm/generate``, ``llm/chat``, ``llm/embed``, ``llm/models``.

    ``hosts``: URLs (or :class:`OllamaConfig`) always in the pool. ``auto_discover``: also add
    servers named by ``OLLAMA_HOST`` / ``GLEITZEIT_OLLAMA_HOSTS`` and any answering on
    ``scan_host`` ports ``scan_ports`` (11434-11439), re-scanned every ``discovery_interval``.
    ``request_timeout`` bounds a silent read, ``connect_timeout`` a connect,
    ``first_token_timeout`` the wait for a stream's first line. A 503 (the server's queue is
    full) sends the call elsewhere and keeps new calls off that server for ``busy_backoff``
    seconds; with nowhere else to go a call waits out the 503s, at most ``busy_wait``
    seconds. ``response_limits`` caps what a server may send (:class:`ResponseLimits`: 16 MiB
    a streamed line, 64 MiB a body, 256 MiB an ``llm/embed`` body); more fails the call.
    Other keyword arguments go to :class:`HubProvider` (``retries``,
    ``health_check_interval``, ...).
    """

    def __init__(
        self,
        hosts: str | OllamaConfig | Iterable[str | OllamaConfig] | None = None,
        auto_discover: bool = True,
        strategy: str = "fleet",
        request_timeout: float = 300.0,
        connect_timeout: float = 2.0,
        first_token_timeout: float | None = None,
        *,
        default_model: str | None = None,
        scan_host: str = "127.0.0.1",
        scan_ports: Sequence[int] = DEFAULT_SCAN_PORTS,
        model_refresh_interval: float = 10.0,
        busy_backoff: float = 2.0,
        busy_wait: float = 30.0,
        response_limits: ResponseLimits | None = None,
        **hub_options: Any,
    ) -> None:
        hub_options.setdefault("name", "ollama")
        super().__init__(
            resource_config_class=OllamaConfig,
            strategy=strategy,
            enable_auto_discovery=auto_discover,
            **hub_options,
        )
        if isinstance(hosts, (str, OllamaConfig)):  # one host given bare
            hosts = [hosts]
        self.hosts = [
            h if isinstance(h, OllamaConfig) else OllamaConfig(host=h) for h in (hosts or [])
        ]
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.default_model = default_model
        self.scan_host = scan_host
        self.scan_ports = tuple(scan_ports)
        self.model_refresh_interval = model_refresh_interval
        self.busy_backoff = busy_backoff
        self.busy_wait = busy_wait
        self.response_limits = response_limits or ResponseLimits()
        self.fleet = Fleet()
        self.refreshing: set[asyncio.Task[None]] = set()
        self.bad_hosts: set[str] = set()  # environment entries already reported unreadable

    # ---- pool membership -------------------------------------------------------------
    def resource_key(self, config: OllamaConfig) -> str:
        return config.url

    async def add_resource(self, config: str | OllamaConfig) -> ResourceInstance:  # type: ignore[override]
        """Add a server at run time: a URL (``"gpu-box:11434"``) or an OllamaConfig."""
        return await super().add_resource(
            config if isinstance(config, OllamaConfig) else OllamaConfig(host=config)
        )

    async def initial_resources(self) -> list[OllamaConfig]:
        if self.hosts or self.enable_auto_discovery:
            return list(self.hosts)
        # Nothing named and no discovery: the servers the environment lists (all of them: a
        # pool in GLEITZEIT_OLLAMA_HOSTS is meant whole), else where Ollama usually is.
        return [OllamaConfig(host=h) for h in env_hosts() or [DEFAULT_HOST]]

    async def discover_resources(self) -> list[OllamaConfig]:
        return [OllamaConfig(host=u) for u in await self.discover_urls()]

    async def create_resource(self, config: OllamaConfig) -> ResourceInstance:
        url = config.url
        limits = httpx.Limits(
            max_connections=config.max_connections, max_keepalive_connections=config.max_connections
        )
        timeout = httpx.Timeout(self.request_timeout, connect=self.connect_timeout)
        transport = httpx.AsyncHTTPTransport(limits=limits)
        client = httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport)
        probe = httpx.AsyncClient(
            base_url=url,
            timeout=httpx.Timeout(self.health_check_timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        )
        urls = {p: httpx.URL(url + p) for p in wire.PATHS.values()}
        state = State(client, transport, probe, url, urls, {"timeout": timeout.as_dict()})
        ident = urlsplit(url).netloc
        view = self.fleet.server(ident)
        if config.num_parallel is not None:
            view.slots, view.slots_known = max(1, config.num_parallel), True
        view.max_loaded = config.max_loaded_models
        return ResourceInstance(
            id=ident,
            config=config,
            endpoint=url,
            handle=state,
            max_concurrency=config.max_concurrency,
            weight=config.weight,
            tags=set(config.tags),
        )

    async def destroy_resource(self, instance: ResourceInstance) -> None:
        st = _state(instance)
        self.fleet.forget(instance.id)
        await asyncio.gather(st.client.aclose(), st.probe.aclose())

    # ---- calls -----------------------------------------------------------------------
    async def execute(
        self, method: str, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if method == wire.MODELS:
            return await self.list_models()
        return await super().execute(method, params, **kwargs)

    def _failed(self, instance: ResourceInstance, status: int, text: str, model: str) -> HubError:
        st = _state(instance)
        if status == 404 and st.models is not None:
            st.models.discard(model)  # deleted since the last refresh: stop routing it here
            st.skipped = f"answered 404 for {model}"
            self.refresh_soon(instance)
            if any(model in (_state(i).models or ()) for i in self.instances if i is not instance):
                return ResourceDeclined(
                    f"model '{model}' is gone from {instance.id}; trying an instance that lists it",
                    instance=instance.id,
                )
        elif status == 503:
            # Ollama's queue is full (OLLAMA_MAX_QUEUE): backpressure, not a fault. Send the
            # call elsewhere, and new calls elsewhere for a while.
            st.busy_until = time.monotonic() + self.busy_backoff
            st.skipped = "busy (503)"
            self.fleet.busy(instance.id, self.busy_backoff)
            return ResourceDeclined(
                f"Ollama at {instance.id} is busy: {wire.error_message(text)}",
                instance=instance.id,
                hint="its queue is full (OLLAMA_MAX_QUEUE); retry later or add an instance",
            )
        return wire.http_error(status, text, instance.id, model)

    def _succeeded(
        self, instance: ResourceInstance, model: str, data: dict[str, Any], own_wait: float
    ) -> None:
        st = _state(instance)
        if data.get("done_reason") == "unload":
            st.loaded.discard(model)
        else:
            st.loaded.add(model)
        self.fleet.finished(instance.id, model, data, own_wait)
        count, ns = wire.figure(data.get("eval_count")), wire.figure(data.get("eval_duration"))
        if count is not None and ns and math.isfinite(count / ns):
            st.samples.append((count, ns))

    async def execute_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        st = _state(instance)
        path, body, model = wire.build_body(method, params, self.default_model, stream=False)
        content = wire.encode_body(body, params)
        own_wait = self.fleet.starting(instance.id, model, instance.in_flight)
        try:
            return await self._post(instance, st, path, content, model, method, params, own_wait)
        except BaseException:
            self.fleet.abandoned(instance.id, model)
            raise

    def _wait_busy(
        self, instance: ResourceInstance, method: str, params: dict, started: float
    ) -> bool:
        """After a 503: ask the same server again (busy here and nowhere else to go)?"""
        waited = time.perf_counter() - started
        return waited < self.busy_wait and not self.elsewhere(instance, method, params)

    async def _busy_pause(self, started: float, pause: float) -> float:
        # Wait for the busy server's queue to drain (the call's deadline still bounds this),
        # with jitter so waiting calls do not return together; the next pause is returned.
        left = self.busy_wait - (time.perf_counter() - started)
        await asyncio.sleep(max(0.0, min(pause * (0.5 + random.random()), left)))
        return min(pause * 2, self.busy_backoff)

    async def _post(
        self,
        instance: ResourceInstance,
        st: State,
        path: str,
        content: bytes,
        model: str,
        method: str,
        params: dict[str, Any],
        own_wait: float,
    ) -> dict[str, Any]:
        started = time.perf_counter()
        pause = _FIRST_BUSY_PAUSE
        limits = self.response_limits
        limit = limits.embed if method == wire.EMBED else limits.body
        while True:
            try:
                r = await wire.post_json(
                    st.transport, st.urls[path], content, st.extensions, limit, instance.id
                )
            except httpx.HTTPError as exc:
                raise wire.transport_error(exc, instance.id, st.url, self.request_timeout) from exc
            if r.status_code != 503 or not self._wait_busy(instance, method, params, started):
                break
            pause = await self._busy_pause(started, pause)
        if r.status_code != 200:
            raise self._failed(instance, r.status_code, r.text, model)
        try:
            data = r.json()
        except ValueError as exc:
            raise ResourceFailed(
                f"Ollama at {instance.id} sent invalid JSON", instance=instance.id
            ) from exc
        if "error" in data:
            raise ResourceFailed(
                f"Ollama at {instance.id} failed: {data['error']}", instance=instance.id
            )
        self._succeeded(instance, model, data, own_wait)
        latency_ms = (time.perf_counter() - started) * 1000.0
        return wire.shape_result(method, data, latency_ms, None, instance.id)

    async def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        if method not in (wire.GENERATE, wire.CHAT):
            raise UserError(f"{method} does not stream", hint="use execute()")
        st = _state(instance)
        path, body, model = wire.build_body(method, params, self.default_model, stream=True)
        content = wire.encode_body(body, params)
        own_wait = self.fleet.starting(instance.id, model, instance.in_flight)
        answered = False
        started = time.perf_counter()
        resp: httpx.Response | None = None
        try:
            # Cancelling the consumer lands here; `finally` closes the response at once, which
            # closes the connection (a half-read stream is never put back in the pool), so
            # Ollama sees the hang-up and stops generating.
            pause = _FIRST_BUSY_PAUSE
            while True:
                request = st.client.build_request(
                    "POST", st.urls[path], content=content, headers=wire.JSON_HEADERS
                )
                resp, lines, first = await wire.first_line(
                    st.client,
                    request,
                    self.first_token_timeout,
                    instance.id,
                    self.response_limits.line,
                )
                if resp.status_code != 503:
                    break
                if not self._wait_busy(instance, method, params, started):
                    break
                await resp.aclose()
                resp = None
                pause = await self._busy_pause(started, pause)
            if resp.status_code != 200:
                said = await _bounded.read(resp, self.response_limits.body, instance.id)
                raise self._failed(instance, resp.status_code, said.text, model)
            ttft_ms = (time.perf_counter() - started) * 1000.0
            line: str | None = first
            while line is not None:
                if line:
                    data = json.loads(line)
                    if "error" in data:  # in-band failure inside a 200 stream
                        raise ResourceFailed(
                            f"Ollama at {instance.id} failed mid-stream: {data['error']}",
                            instance=instance.id,
                        )
                    if data.get("done"):
                        answered = True
                        self._succeeded(instance, model, data, own_wait)
                        latency = (time.perf_counter() - started) * 1000.0
                        final = wire.shape_result(method, data, latency, ttft_ms, instance.id)
                        final["done"] = True
                        yield final
                        return
                    yield wire.shape_chunk(method, data)
                line = await anext(lines, None)
            raise ResourceFailed(
                f"Ollama at {instance.id} ended the stream without done", instance=instance.id
            )
        except httpx.HTTPError as exc:
            raise wire.transport_error(exc, instance.id, st.url, self.request_timeout) from exc
        except ValueError as exc:
            raise ResourceFailed(
                f"Ollama at {instance.id} sent invalid JSON", instance=instance.id
            ) from exc
        finally:
            if not answered:
                self.fleet.abandoned(instance.id, model)
            if resp is not None:
                await resp.aclose()


#: Seed-compatible name.
OllamaProviderStreamlined = OllamaProvider
