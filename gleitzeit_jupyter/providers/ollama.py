"""OllamaProvider: a pool of Ollama servers behind one HubProvider, spoken to over httpx.

Routing knows the fleet: an instance takes a call only if ``/api/tags`` lists the model and
``/api/show`` says the model can serve it (vision for images, thinking, tools, embedding);
the default ``fleet`` strategy then sends it where it is expected to finish first, from each
server's learned speed, slots, queue and models in memory (:mod:`gleitzeit_jupyter.hub.fleet`).
A 503 (Ollama's queue full) and a 404 for a model another instance lists move the call
elsewhere without counting as a failure. See the README's Ollama section.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..hub import (
    HubError,
    HubProvider,
    NoResourceAvailable,
    ResourceDeclined,
    ResourceFailed,
    ResourceInstance,
    ResourceStatus,
    UserError,
)
from ..hub.fleet import Fleet
from . import _bounded
from . import _ollama_wire as wire
from ._bounded import ResponseLimits
from .hosts import DEFAULT_HOST, env_host_values, env_hosts, parse_host

__all__ = ["OllamaConfig", "OllamaProvider", "OllamaProviderStreamlined", "ResponseLimits"]

log = logging.getLogger(__name__)

DEFAULT_SCAN_PORTS = tuple(range(11434, 11440))
_PROBE_TIMEOUT = 0.5
_FIRST_BUSY_PAUSE = 0.05  # seconds; doubled up to busy_backoff while a lone server is busy
_TPS_SAMPLES = 64  # recent calls behind an instance's tokens_per_s (bounded memory)


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


@dataclass
class _State:
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
    samples: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=_TPS_SAMPLES))


def _state(instance: ResourceInstance) -> _State:
    return instance.handle  # type: ignore[no-any-return]


class OllamaProvider(HubProvider[OllamaConfig]):
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
        self._refreshing: set[asyncio.Task[None]] = set()
        self._bad_hosts: set[str] = set()  # environment entries already reported unreadable

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
        named = self._named_hosts()  # the user named these: kept even while they are down
        scanned = [parse_host(f"{self.scan_host}:{p}") for p in self.scan_ports]
        scanned = [u for u in scanned if u not in named]
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT) as probe:
            answers = await asyncio.gather(*(self._probe(probe, u) for u in scanned))
        urls = dict.fromkeys(named + [u for u, ok in zip(scanned, answers, strict=True) if ok])
        return [OllamaConfig(host=u) for u in urls]

    def _named_hosts(self) -> list[str]:
        # Each entry on its own: one typo in a list of servers must not empty the pool of
        # the others (discovery failing as a whole would add none of them). The bad entry
        # is reported once, not at every discovery pass.
        urls = []
        for value in env_host_values():
            try:
                urls.append(parse_host(value))
            except UserError as exc:
                if value not in self._bad_hosts:
                    self._bad_hosts.add(value)
                    log.warning("%s: skipping Ollama host from the environment: %s", self.name, exc)
        return list(dict.fromkeys(urls))

    async def _probe(self, client: httpx.AsyncClient, url: str) -> bool:
        try:
            limit = self.response_limits.body
            r = await _bounded.request(client, "GET", f"{url}/api/version", limit, url)
            return r.status_code == 200 and "version" in r.json()
        except (httpx.HTTPError, ValueError, TypeError, ResourceFailed):  # not an Ollama there
            return False

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
        state = _State(client, transport, probe, url, urls, {"timeout": timeout.as_dict()})
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

    async def check_resource_health(self, instance: ResourceInstance) -> bool:
        st = _state(instance)
        r = await self._probe_get(instance, "/api/version")
        if r.status_code != 200:
            return False
        instance.metadata["version"] = r.json().get("version")
        if time.monotonic() - st.refreshed_at >= self.model_refresh_interval:
            await self._refresh_models(instance)
        return True

    async def _refresh_models(self, instance: ResourceInstance) -> None:
        st = _state(instance)
        tags, ps = await asyncio.gather(
            self._probe_get(instance, "/api/tags"), self._probe_get(instance, "/api/ps")
        )
        tags.raise_for_status()
        ps.raise_for_status()
        catalog = {
            wire.normalize_model(m.get("model") or m["name"]): m
            for m in tags.json().get("models") or []
        }
        await self._refresh_capabilities(instance, catalog)
        st.catalog = catalog
        st.models = set(catalog)
        in_memory = [
            wire.normalize_model(m.get("model") or m["name"]) for m in ps.json().get("models") or []
        ]
        st.loaded = set(in_memory)
        self.fleet.set_loaded(instance.id, in_memory)
        st.refreshed_at = time.monotonic()
        instance.metadata["models"] = sorted(st.models)
        instance.metadata["loaded"] = sorted(st.loaded)

    async def _probe_get(self, instance: ResourceInstance, path: str) -> httpx.Response:
        limit = self.response_limits.body
        return await _bounded.request(_state(instance).probe, "GET", path, limit, instance.id)

    async def _refresh_capabilities(
        self, instance: ResourceInstance, catalog: dict[str, dict[str, Any]]
    ) -> None:
        """``/api/show`` for each model whose digest is new here (cached per digest)."""
        st = _state(instance)
        stale = [
            name
            for name, meta in catalog.items()
            if st.capabilities.get(name, ("",))[0] != meta.get("digest", "?")
        ]

        async def show(name: str) -> None:
            r = await _bounded.request(
                st.probe, "POST", "/api/show", self.response_limits.body, instance.id,
                json={"model": name},
            )  # fmt: skip
            if r.status_code == 200:
                caps = r.json().get("capabilities")
                if isinstance(caps, list):
                    st.capabilities[name] = (catalog[name].get("digest", "?"), frozenset(caps))

        await asyncio.gather(*(show(n) for n in stale), return_exceptions=True)
        for gone in set(st.capabilities) - set(catalog):
            del st.capabilities[gone]

    def _refresh_soon(self, instance: ResourceInstance) -> None:
        # After a 404 the model list is stale: re-read it now, not at the next health check.
        task = asyncio.ensure_future(self._refresh_models(instance))
        self._refreshing.add(task)
        task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshing.discard(task)
        if not task.cancelled():
            task.exception()  # read: a failed refresh is the health check's business

    # ---- routing ---------------------------------------------------------------------
    def validate(self, method: str, params: dict[str, Any]) -> None:
        wire.check_params(method, params, self.default_model)

    def _model(self, params: dict[str, Any]) -> str:
        return wire.normalize_model(str(params.get("model") or self.default_model))

    def _missing(self, instance: ResourceInstance, method: str, params: dict) -> str | None:
        """Why this instance cannot take the call; None when it can."""
        st = _state(instance)
        model = self._model(params)
        if st.models is None:
            return "has not listed its models yet"
        if model not in st.models:
            return f"does not have {model}"
        known = st.capabilities.get(model)
        if known is None:
            return None  # /api/show did not answer: let Ollama itself judge
        lacking = sorted(wire.needs(method, params) - known[1])
        return f"{model} lacks {', '.join(lacking)}" if lacking else None

    def instance_accepts(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        if method not in wire.MODEL_METHODS:
            return True
        why = self._missing(instance, method, params)
        if why is not None:
            _state(instance).skipped = why
            return False
        return True

    def instance_cost(self, instance: ResourceInstance, method: str, params: dict) -> float:
        limit = params.get("max_tokens", params.get("num_predict"))
        opts = params.get("options")
        if limit is None and isinstance(opts, dict):
            limit = opts.get("num_predict")
        tokens = float(limit) if isinstance(limit, int) and limit > 0 else None
        return self.fleet.cost(instance.id, instance.in_flight, self._model(params), tokens)

    def instance_preference(self, instance: ResourceInstance, method: str, params: dict) -> int:
        st = _state(instance)
        # Not recently "server busy" (503) beats everything; then "model already loaded", but
        # only while it has free slots: else every call would pile onto the first instance
        # that loaded the model and the others would never load it.
        not_busy = 2 if st.busy_until <= time.monotonic() else 0
        warm = (
            instance.in_flight < self.fleet.server(instance.id).slots
            and self._model(params) in st.loaded
        )
        return not_busy + warm

    def no_instance_error(
        self, method: str, params: dict, instances: list[ResourceInstance]
    ) -> HubError | None:
        if method not in wire.MODEL_METHODS or not instances:
            return None
        if any(
            self._model(params) in (_state(i).models or ()) and not self._missing(i, method, params)
            for i in instances
        ):
            return None  # it exists, on drained or removed instances: the hub's error says so
        model = str(params.get("model") or self.default_model)  # as the caller wrote it
        asked = ", ".join(i.id for i in instances)
        having = [i for i in instances if self._model(params) in (_state(i).models or ())]
        if having:
            where = "; ".join(
                f"{i.id}: {self._missing(i, method, params) or 'busy'}" for i in having
            )
            return UserError(
                f"no Ollama instance can serve this {method} call with '{model}' ({where})",
                hint="pick a model that has it (see `ollama show MODEL`) or drop that field",
            )
        unknown = [i.id for i in instances if _state(i).models is None]
        if unknown:
            return NoResourceAvailable(
                f"no reachable Ollama instance has model '{model}' (asked: {asked})",
                hint=f"{', '.join(unknown)} did not list their models yet; check they are up",
            )
        have = sorted(set().union(*(_state(i).models or set() for i in instances)))
        return UserError(
            f"model '{model}' is not on any Ollama instance (asked: {asked})",
            hint=f"pull it first (`ollama pull {model}`); available: {', '.join(have) or 'none'}",
        )

    def instance_extras(self, instance: ResourceInstance) -> dict[str, Any]:
        st = _state(instance)
        return {
            "tokens_per_s": _tokens_per_s(st.samples),
            "skipped": st.skipped,
            "routing": self.fleet.snapshot(instance.id),
        }

    def pool_extras(self, instances: list[ResourceInstance]) -> dict[str, Any]:
        return {
            "tokens_per_s": _tokens_per_s([s for i in instances for s in _state(i).samples]),
            "routing": _WHY.get(self.strategy, self.strategy),
        }

    # ---- calls -----------------------------------------------------------------------
    async def execute(
        self, method: str, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if method == wire.MODELS:
            return await self.list_models()
        return await super().execute(method, params, **kwargs)

    def _elsewhere(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        """Another instance can take the call (it lists the model, with the capabilities
        the call needs) and has not said "busy" lately."""
        now = time.monotonic()
        return any(
            i is not instance
            and i.enabled
            and i.status in (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
            and self._missing(i, method, params) is None
            and _state(i).busy_until <= now
            for i in self.instances
        )

    def _failed(self, instance: ResourceInstance, status: int, text: str, model: str) -> HubError:
        st = _state(instance)
        if status == 404 and st.models is not None:
            st.models.discard(model)  # deleted since the last refresh: stop routing it here
            st.skipped = f"answered 404 for {model}"
            self._refresh_soon(instance)
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
        return waited < self.busy_wait and not self._elsewhere(instance, method, params)

    async def _busy_pause(self, started: float, pause: float) -> float:
        # Wait for the busy server's queue to drain (the call's deadline still bounds this),
        # with jitter so waiting calls do not return together; the next pause is returned.
        left = self.busy_wait - (time.perf_counter() - started)
        await asyncio.sleep(max(0.0, min(pause * (0.5 + random.random()), left)))
        return min(pause * 2, self.busy_backoff)

    async def _post(
        self,
        instance: ResourceInstance,
        st: _State,
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

    # ---- pool-wide -------------------------------------------------------------------
    async def list_models(self) -> dict[str, Any]:
        """Union of ``/api/tags`` over the pool: which instances have, and have loaded, each
        model. Refreshes every reachable instance first."""
        if not self.initialized:
            raise NoResourceAvailable(
                "the ollama provider is not running", hint="await provider.initialize()"
            )
        live = [
            i
            for i in self.instances
            if i.status not in (ResourceStatus.DRAINING, ResourceStatus.STOPPED)
        ]
        outcomes = await asyncio.gather(
            *(self._refresh_models(i) for i in live), return_exceptions=True
        )
        models: dict[str, dict[str, Any]] = {}
        reach: dict[str, Any] = {}
        for inst, outcome in zip(live, outcomes, strict=True):
            st = _state(inst)
            reach[inst.id] = {
                "reachable": not isinstance(outcome, BaseException),
                "models": len(st.models or ()),
            }
            for name, meta in st.catalog.items():
                entry = models.setdefault(
                    name,
                    {
                        "name": name,
                        "size": meta.get("size"),
                        "details": meta.get("details"),
                        "instances": [],
                        "loaded_on": [],
                    },
                )
                entry["instances"].append(inst.id)
                if name in st.loaded:
                    entry["loaded_on"].append(inst.id)
        return {"models": [models[k] for k in sorted(models)], "instances": reach}


#: Seed-compatible name.
OllamaProviderStreamlined = OllamaProvider


_WHY = {
    "fleet": "fleet: each call goes where it is expected to finish first (learned speed and"
    " slots, calls queued there, a cold load if the model is not in memory)",
}


def _tokens_per_s(samples: Any) -> float | None:
    """Tokens generated per second of generation time, over (eval_count, eval_ns) samples."""
    ns = sum(s[1] for s in samples)
    return round(sum(s[0] for s in samples) / (ns / 1e9), 2) if ns else None
