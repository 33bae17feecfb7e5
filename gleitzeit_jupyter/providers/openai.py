"""OpenAIProvider: a pool of OpenAI-compatible servers (vLLM, llama.cpp's llama-server,
LM Studio, SGLang, TGI, Ollama's /v1) behind one HubProvider, spoken to over httpx.

Same methods and result shapes as :class:`~gleitzeit_jupyter.providers.ollama.OllamaProvider`
(``llm/generate``, ``llm/chat``, ``llm/embed``, ``llm/models``), so the magics, panels and the
sidebar take either. Routing by model from ``/v1/models``; the ``fleet`` strategy sends a
call where it is expected to finish first, counting the queue an engine reports on its
Prometheus ``/metrics`` (vLLM, SGLang, llama.cpp, TGI gauges) besides this pool's own calls.
A 429 is backpressure (``Retry-After`` honoured, never a breaker failure); 401/403 is the
caller's (a UserError naming the key setting); 5xx, refused and reset connections fail over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..hub import (
    HubError,
    ResourceDeclined,
    ResourceFailed,
    ResourceInstance,
    UserError,
)
from ..hub.fleet import Fleet
from ..hub.provider import HubProvider
from . import _bounded, _sse
from . import _openai_fields as fields
from . import _openai_wire as wire
from ._bounded import ResponseLimits
from ._openai_pool import OpenAIPoolMixin, State, another_pool, served_name, state
from ._openai_url import KEY_SETTING, base_url

__all__ = ["OpenAIConfig", "OpenAIProvider", "ResponseLimits", "another_pool", "base_url"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIConfig:
    """One OpenAI-compatible server.

    ``host``: its base URL (``http://gpu-2:8000/v1``). ``api_key_env``: the environment
    variable holding this server's key (keys themselves are never stored in a config, so
    ``%gleitzeit save`` never writes one to disk). ``num_parallel``: requests it runs at
    once, for the fleet estimate (None: learned). ``max_concurrency``: a hard cap on calls
    the hub sends it at once.
    """

    host: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = None
    num_parallel: int | None = None
    max_concurrency: int | None = None
    max_connections: int = 32
    weight: float = 1.0
    tags: frozenset[str] = frozenset()

    @property
    def url(self) -> str:
        return base_url(self.host)


class OpenAIProvider(OpenAIPoolMixin, HubProvider[OpenAIConfig]):
    """Pool of OpenAI-compatible servers: ``llm/generate``, ``llm/chat``, ``llm/embed``,
    ``llm/models``.

    ``hosts``: base URLs (or :class:`OpenAIConfig`); none given: ``$GLEITZEIT_OPENAI_HOSTS``
    (comma separated). ``api_key``: sent as ``Authorization: Bearer``; one key for all, or a
    mapping base URL → key; default ``$OPENAI_API_KEY``; a config's ``api_key_env`` wins.
    A 429 keeps new calls off that server for its ``Retry-After`` (default ``busy_backoff``
    seconds) and sends the call elsewhere; with nowhere else to go it waits, at most
    ``busy_wait`` seconds. ``response_limits`` caps what a server may send
    (:class:`ResponseLimits`: 16 MiB a streamed line or event, 64 MiB a body, 256 MiB an
    ``llm/embed`` body); more fails the call. Other keyword arguments go to
    :class:`HubProvider`.
    """

    def __init__(
        self,
        hosts: str | OpenAIConfig | Iterable[str | OpenAIConfig] | None = None,
        api_key: str | Mapping[str, str] | None = None,
        strategy: str = "fleet",
        request_timeout: float = 300.0,
        connect_timeout: float = 2.0,
        first_token_timeout: float | None = None,
        *,
        default_model: str | None = None,
        model_refresh_interval: float = 10.0,
        busy_backoff: float = 2.0,
        busy_wait: float = 30.0,
        response_limits: ResponseLimits | None = None,
        **hub_options: Any,
    ) -> None:
        hub_options.setdefault("name", "openai")
        hub_options.setdefault("enable_auto_discovery", False)
        super().__init__(resource_config_class=OpenAIConfig, strategy=strategy, **hub_options)
        if isinstance(hosts, (str, OpenAIConfig)):
            hosts = [hosts]
        if hosts is None:
            env = os.environ.get("GLEITZEIT_OPENAI_HOSTS", "")
            hosts = [h.strip() for h in env.split(",") if h.strip()]
        self.hosts = [h if isinstance(h, OpenAIConfig) else OpenAIConfig(host=h) for h in hosts]
        if isinstance(api_key, Mapping):
            self._keys: dict[str, str] = {base_url(k): v for k, v in api_key.items()}
            self._key: str | None = None
        else:
            self._keys, self._key = {}, api_key
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.default_model = default_model
        self.model_refresh_interval = model_refresh_interval
        self.busy_backoff = busy_backoff
        self.busy_wait = busy_wait
        self.response_limits = response_limits or ResponseLimits()
        self.fleet = Fleet()

    # ---- pool membership -------------------------------------------------------------
    def resource_key(self, config: OpenAIConfig) -> str:
        return config.url

    async def add_resource(self, config: str | OpenAIConfig) -> ResourceInstance:  # type: ignore[override]
        """Add a server at run time: a base URL (``"gpu-2:8000"``) or an OpenAIConfig."""
        return await super().add_resource(
            config if isinstance(config, OpenAIConfig) else OpenAIConfig(host=config)
        )

    async def initial_resources(self) -> list[OpenAIConfig]:
        return list(self.hosts)

    async def discover_resources(self) -> list[OpenAIConfig]:
        return list(self.hosts)

    def _api_key(self, config: OpenAIConfig) -> str | None:
        if config.api_key_env and os.environ.get(config.api_key_env):
            return os.environ[config.api_key_env]
        return self._keys.get(config.url) or self._key or os.environ.get("OPENAI_API_KEY")

    async def create_resource(self, config: OpenAIConfig) -> ResourceInstance:
        url = config.url
        limits = httpx.Limits(
            max_connections=config.max_connections, max_keepalive_connections=config.max_connections
        )
        timeout = httpx.Timeout(self.request_timeout, connect=self.connect_timeout)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key(config)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        transport = httpx.AsyncHTTPTransport(limits=limits)
        client = httpx.AsyncClient(timeout=timeout, transport=transport, headers=headers)
        probe = httpx.AsyncClient(
            timeout=httpx.Timeout(self.health_check_timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            headers=headers,
        )
        split = urlsplit(url)
        root = url[: -len("/v1")] if split.path.endswith("/v1") else url
        urls = {p: httpx.URL(url + p) for p in (*fields.PATHS.values(), "/models")}
        urls["/health"] = httpx.URL(root + "/health")
        urls["/metrics"] = httpx.URL(root + "/metrics")
        urls["/info"] = httpx.URL(root + "/info")  # TGI's, naming its one model
        st = State(client, transport, probe, url, urls, headers, {"timeout": timeout.as_dict()})
        ident = split.netloc + (split.path if split.path != "/v1" else "")
        view = self.fleet.server(ident)
        if config.num_parallel is not None:
            view.slots, view.slots_known = max(1, config.num_parallel), True
        return ResourceInstance(
            id=ident,
            config=config,
            endpoint=url,
            handle=st,
            max_concurrency=config.max_concurrency,
            weight=config.weight,
            tags=set(config.tags),
        )

    async def destroy_resource(self, instance: ResourceInstance) -> None:
        st = state(instance)
        self.fleet.forget(instance.id)
        await asyncio.gather(st.client.aclose(), st.probe.aclose())

    # ---- calls -----------------------------------------------------------------------
    def validate(self, method: str, params: dict[str, Any]) -> None:
        fields.check_params(method, params, self.default_model)

    async def execute(
        self, method: str, params: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        if method == fields.MODELS:
            return await self.list_models()
        return await super().execute(method, params, **kwargs)

    def _body(self, instance: ResourceInstance, method: str, params: dict, stream: bool):
        path, body, model = fields.build_body(method, params, self.default_model, stream)
        # Ask by the name this server lists (``llama3.2`` may be ``llama3.2:latest`` here).
        body["model"] = served_name(state(instance), model) or model
        return path, fields.encode(body), model

    async def _rate_limited(
        self, instance: ResourceInstance, resp: httpx.Response, method: str, params: dict, t0: float
    ) -> bool:
        """After a 429: True to ask the same server again (nowhere else to go, and time
        left), after waiting as it asked; else raises ResourceDeclined."""
        st = state(instance)
        wait = wire.retry_after(resp.headers, self.busy_backoff, self.busy_wait)
        st.busy_until = time.monotonic() + wait
        st.skipped = f"rate limited (429, retry after {wait:g} s)"
        self.fleet.busy(instance.id, wait)
        waited = time.perf_counter() - t0
        left = self.busy_wait - waited
        if left > 0 and not self.elsewhere(instance, method, params):
            # At least as long as this call has waited so far (up to busy_backoff): a server
            # answering "Retry-After: 0" every time gets asked with exponential backoff, not
            # in a tight loop.
            pause = max(wait, min(self.busy_backoff, max(0.05, waited)))
            await asyncio.sleep(min(left, pause * (0.75 + random.random() / 2)))
            return True
        raise ResourceDeclined(
            f"{instance.id} is rate limiting (429): {wire.error_message(st.said(resp.text))}",
            instance=instance.id,
            hint="it asked to retry later; add a server or lower --concurrency",
        )

    def _failed(self, instance: ResourceInstance, resp: httpx.Response, model: str) -> HubError:
        status, text = resp.status_code, state(instance).said(resp.text)
        if status == 404 or wire.error_code(text) == "model_not_found":
            st = state(instance)
            if st.models is not None:
                st.models.discard(model)
            st.refreshed_at = float("-inf")  # re-read /v1/models at the next health check
            st.skipped = f"answered 404 for {model}"
            if any(served_name(state(i), model) for i in self.instances if i is not instance):
                return ResourceDeclined(
                    f"model '{model}' is gone from {instance.id}; trying a server that lists it",
                    instance=instance.id,
                )
        return wire.http_error(status, text, instance.id, model, KEY_SETTING)

    def _learn(self, instance: ResourceInstance, model: str, result: dict, own_wait: float) -> None:
        ttft, count = result.get("time_to_first_token_ms"), result.get("completion_tokens")
        # Not streamed: no first token seen, the whole call counts as generation.
        gen = result.get("eval_duration") or int(result["latency_ms"] * 1e6)
        data = {"eval_count": count, "eval_duration": gen, "load_duration": 0}
        data["prompt_eval_duration"] = int(ttft * 1e6) if ttft is not None else 0
        self.fleet.finished(instance.id, model, data, own_wait)
        if count and gen:
            state(instance).samples.append((count, gen))

    async def execute_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        st = state(instance)
        path, content, model = self._body(instance, method, params, stream=False)
        own_wait = self.fleet.starting(instance.id, model, instance.in_flight)
        t0 = time.perf_counter()
        limits = self.response_limits
        limit = limits.embed if method == fields.EMBED else limits.body
        try:
            while True:
                request = httpx.Request(
                    "POST", st.urls[path], content=content, headers=st.headers,
                    extensions=st.extensions,
                )  # fmt: skip
                try:
                    # Straight through the transport: AsyncClient.send's hooks, auth and
                    # cookies are unused here and cost a quarter of the client's CPU.
                    raw = await st.transport.handle_async_request(request)
                    try:
                        r = await _bounded.read(raw, limit, instance.id, request)
                    finally:
                        await raw.aclose()
                except httpx.HTTPError as exc:
                    raise wire.transport_error(
                        exc, instance.id, st.url, self.request_timeout
                    ) from exc
                if r.status_code != 429 or not await self._rate_limited(
                    instance, r, method, params, t0
                ):
                    break
            if r.status_code != 200:
                raise self._failed(instance, r, model)
            try:
                data = r.json()
            except ValueError as exc:
                raise ResourceFailed(
                    f"{instance.id} sent invalid JSON", instance=instance.id
                ) from exc
        except BaseException:
            self.fleet.abandoned(instance.id, model)
            raise
        latency_ms = (time.perf_counter() - t0) * 1000.0
        try:
            result = wire.shape_result(method, data, latency_ms, None, instance.id)
        except wire.ChatCompletionError as exc:
            self.fleet.abandoned(instance.id, model)
            raise wire.not_an_answer(instance.id, method, exc) from None
        if method != fields.EMBED:
            self._learn(instance, model, result, own_wait)
        return result

    async def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        if method not in (fields.GENERATE, fields.CHAT):
            raise UserError(f"{method} does not stream", hint="use execute()")
        st = state(instance)
        path, content, model = self._body(instance, method, params, stream=True)
        own_wait = self.fleet.starting(instance.id, model, instance.in_flight)
        t0 = time.perf_counter()
        answered = False
        resp: httpx.Response | None = None
        events: AsyncIterator[tuple[str, str]] | None = None
        try:
            while True:
                request = st.client.build_request("POST", st.urls[path], content=content)
                resp, events, first = await _sse.first_event(
                    st.client,
                    request,
                    self.first_token_timeout,
                    instance.id,
                    self.response_limits.line,
                )
                if resp.status_code != 429:
                    break
                said = await _bounded.read(resp, self.response_limits.body, instance.id)
                await resp.aclose()
                await self._rate_limited(instance, said, method, params, t0)
            if resp.status_code != 200:
                said = await _bounded.read(resp, self.response_limits.body, instance.id)
                raise self._failed(instance, said, model)
            ttft_ms: float | None = None
            whole = wire.Assembly(method)
            sse = first
            while sse is not None:
                kind, text = sse
                if text == "[DONE]":
                    break
                if kind == "error":  # `event: error`, llama.cpp's `error:`; maybe not JSON
                    raise wire.stream_error(instance.id, st.said(text), model, KEY_SETTING)
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                # In-band failure after the 200: {"error": {...}} (newer vLLM) or a bare
                # error object {"object": "error", ...} (older vLLM).
                if data.get("error") or data.get("object") == "error":
                    raise wire.stream_error(instance.id, st.said(text), model, KEY_SETTING)
                try:
                    chunk = whole.add(data)
                except wire.ChatCompletionError as exc:
                    raise ResourceFailed(
                        f"{instance.id} sent {exc}", instance=instance.id
                    ) from None
                if chunk is not None:
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - t0) * 1000.0
                    yield chunk
                sse = await anext(events, None)
            if sse is None and whole.finish_reason is None:
                raise ResourceFailed(
                    f"{instance.id} ended the stream before the answer finished",
                    instance=instance.id,
                )
            # A closed stream after the finish_reason is complete: TGI before 2.2 and some
            # llama.cpp forks send no [DONE].
            answered = True
            latency_ms = (time.perf_counter() - t0) * 1000.0
            final = wire.shape_result(method, whole.complete(), latency_ms, ttft_ms, instance.id)
            self._learn(instance, model, final, own_wait)
            final["done"] = True
            yield final
        except httpx.HTTPError as exc:
            raise wire.transport_error(exc, instance.id, st.url, self.request_timeout) from exc
        except ValueError as exc:
            raise ResourceFailed(f"{instance.id} sent invalid JSON", instance=instance.id) from exc
        finally:
            if not answered:
                self.fleet.abandoned(instance.id, model)
            if events is not None:
                await events.aclose()  # type: ignore[attr-defined]
            if resp is not None:
                await resp.aclose()
