"""What the OpenAI provider knows about each server and how it routes by it: health
(``/v1/models``, ``/health`` and ``/metrics`` where the engine has them), the models each
serves, the queue it reports, the hub's routing hooks built on those, and the pool's model
list."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..hub import HubError, NoResourceAvailable, ResourceInstance, ResourceStatus, UserError
from ..hub.fleet import Fleet
from . import _bounded
from . import _openai_fields as fields
from . import _openai_wire as wire
from ._bounded import ResponseLimits

__all__ = ["OpenAIPoolMixin", "State", "another_pool", "served_name", "state"]

_TPS_SAMPLES = 64

#: True while the caller can send the call to another pool (the %%llm router sets it): a
#: server's 429 then turns the call away at once rather than waiting out its Retry-After.
another_pool: ContextVar[bool] = ContextVar("gleitzeit_another_pool", default=False)


@dataclass
class State:
    """One server as the provider sees it (lives in ``instance.handle``)."""

    client: httpx.AsyncClient
    transport: httpx.AsyncHTTPTransport  # the client's own pool, for the hot path
    # Health checks use their own connections: behind busy call connections a probe would
    # time out and eject a healthy server for being busy.
    probe: httpx.AsyncClient
    url: str
    urls: dict[str, httpx.URL]
    headers: dict[str, str] = field(repr=False)  # holds the API key
    extensions: dict[str, Any]
    models: set[str] | None = None  # None: /v1/models never answered yet
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)
    refreshed_at: float = float("-inf")
    has_health: bool | None = None  # None: not asked yet; False: the engine has no /health
    has_metrics: bool | None = None
    queue: tuple[str, float, float] | None = None  # (engine, running, waiting) from /metrics
    busy_until: float = 0.0
    # Set while /v1/models answers 401/403: the server is up, the key is wrong. Calls still
    # go there, so the caller gets the one-line key error rather than "no server".
    auth_error: str | None = None
    unlisted: str | None = None  # why /v1/models gave no list, when the server is up
    skipped: str | None = None
    samples: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=_TPS_SAMPLES))

    def said(self, text: str) -> str:
        """A server's answer with the key it was sent blanked out: some quote it back in
        their errors, and errors end up in notebooks, logs and the metrics table."""
        key = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return text.replace(key, "***") if key else text


def state(instance: ResourceInstance) -> State:
    return instance.handle  # type: ignore[no-any-return]


def served_name(st: State, model: str) -> str | None:
    """The name this server lists ``model`` under, or None. Ollama's implicit ``:latest``
    tag is matched both ways, so ``llama3.2`` finds an Ollama ``/v1`` server's model."""
    models = st.models or set()
    if model in models:
        return model
    if f"{model}:latest" in models:
        return f"{model}:latest"
    if model.endswith(":latest") and model[: -len(":latest")] in models:
        return model[: -len(":latest")]
    return None


class OpenAIPoolMixin:
    """Health and routing hooks of :class:`~gleitzeit_jupyter.providers.openai.OpenAIProvider`."""

    fleet: Fleet
    name: str
    strategy: str
    default_model: str | None
    model_refresh_interval: float
    instances: list[ResourceInstance]
    initialized: bool
    response_limits: ResponseLimits

    # ---- health ------------------------------------------------------------------------
    async def check_resource_health(self, instance: ResourceInstance) -> bool:
        st = state(instance)
        if st.has_health is not False:
            r = await self.probe_get(instance, "/health")
            if r.status_code in (401, 403, 404, 405):
                st.has_health = False  # none (LM Studio), or behind the key: /v1/models decides
            elif r.status_code != 200:
                return False  # llama.cpp answers 503 while it loads the model
            else:
                st.has_health = True
        if time.monotonic() - st.refreshed_at >= self.model_refresh_interval:
            await self.refresh_models(instance)
        if st.has_metrics is not False:
            await self._read_metrics(instance)
        return True

    async def refresh_models(self, instance: ResourceInstance) -> None:
        st = state(instance)
        r = await self.probe_get(instance, "/models")
        if r.status_code in (401, 403):
            st.auth_error = (
                f"refused the API key ({r.status_code}): {wire.error_message(st.said(r.text))}"
            )
            instance.metadata["auth_error"] = st.auth_error
            return
        if r.status_code == 404:
            try:
                rows = await self._models_from_info(instance)
            except (httpx.HTTPStatusError, ValueError):
                # Up, but nothing OpenAI-like under this path: most often a base URL
                # without its /v1 (or with another prefix).
                st.unlisted = f"{r.url.path} answered 404; is the base URL right (usually .../v1)?"
                raise
        else:
            r.raise_for_status()
            rows = _model_rows(r)
            if rows is None:
                st.unlisted = (
                    f"{r.url.path} answered with no model list; is this an OpenAI-compatible"
                    " server, and the base URL its API's (usually .../v1)?"
                )
                raise ValueError(st.unlisted)
        st.auth_error = st.unlisted = None
        instance.metadata.pop("auth_error", None)
        st.catalog = {str(m["id"]): m for m in rows if isinstance(m, dict) and "id" in m}
        st.models = set(st.catalog)
        st.refreshed_at = time.monotonic()
        # An OpenAI server holds the models it lists: none waits for a cold load.
        self.fleet.set_loaded(instance.id, sorted(st.models))
        instance.metadata["models"] = sorted(st.models)
        instance.metadata["loaded"] = sorted(st.models)

    async def probe_get(self, instance: ResourceInstance, path: str) -> httpx.Response:
        """GET one of the server's ``urls`` on the probe connection, bounded by
        ``response_limits.body``."""
        url, limit = state(instance).urls[path], self.response_limits.body
        return await _bounded.request(state(instance).probe, "GET", url, limit, instance.id)

    async def _models_from_info(self, instance: ResourceInstance) -> list[dict[str, Any]]:
        """TGI versions without ``/v1/models`` name their one model on ``/info``; an
        engine with neither is not an OpenAI-compatible server (HTTPStatusError)."""
        r = await self.probe_get(instance, "/info")
        r.raise_for_status()
        model = r.json().get("model_id")
        if not isinstance(model, str) or not model:
            raise ValueError("/info names no model_id")
        return [{"id": model, "owned_by": "tgi"}]

    async def _read_metrics(self, instance: ResourceInstance) -> None:
        st = state(instance)
        try:
            r = await self.probe_get(instance, "/metrics")
        except httpx.HTTPError:
            return  # the health check proper decides health; metrics are a bonus
        instance.metadata.pop("queue", None)  # an answer without a readable queue clears it
        if r.status_code != 200:
            st.has_metrics = False if r.status_code in (404, 405, 501) else st.has_metrics
            st.queue = None
            return
        try:
            st.queue = wire.queue_depth(r.text)
        except ValueError:
            st.queue = None
        st.has_metrics = st.queue is not None or st.has_metrics
        if st.queue is not None:
            instance.metadata["queue"] = {
                "engine": st.queue[0],
                "running": st.queue[1],
                "waiting": st.queue[2],
            }

    # ---- routing -----------------------------------------------------------------------
    def _model(self, params: dict[str, Any]) -> str:
        return str(params.get("model") or self.default_model).strip()

    def _missing(self, instance: ResourceInstance, params: dict[str, Any]) -> str | None:
        st = state(instance)
        model = self._model(params)
        if st.auth_error is not None:
            # Elsewhere if another server has the model; else the call meets the 401, whose
            # error names the key setting (better than "no server has the model").
            others = (
                i
                for i in self.instances
                if i is not instance and i.enabled and served_name(state(i), model)
            )
            return st.auth_error if any(others) else None
        if st.models is None:
            return "has not listed its models yet"
        return None if served_name(st, model) else f"does not serve {model}"

    def instance_accepts(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        if method not in fields.MODEL_METHODS:
            return True
        why = self._missing(instance, params)
        if why is not None:
            state(instance).skipped = why
            return False
        return True

    def queued_there(self, instance: ResourceInstance) -> int:
        """Calls at the server: this pool's own, or what its ``/metrics`` last reported
        (other clients' calls included), whichever is more."""
        st = state(instance)
        reported = 0
        if st.queue is not None:
            reported = int(st.queue[1] + st.queue[2])
        return max(instance.in_flight, reported)

    def instance_cost(self, instance: ResourceInstance, method: str, params: dict) -> float:
        limit = fields.token_limit(params)
        tokens = float(limit) if isinstance(limit, int) and limit > 0 else None
        return self.fleet.cost(
            instance.id, self.queued_there(instance), self._model(params), tokens
        )

    def instance_preference(self, instance: ResourceInstance, method: str, params: dict) -> int:
        return 1 if state(instance).busy_until <= time.monotonic() else 0

    def elsewhere(self, instance: ResourceInstance, method: str, params: dict) -> bool:
        """Another server, or another pool, can take the call and has not rate limited
        lately."""
        if another_pool.get():
            return True
        now = time.monotonic()
        return any(
            i is not instance
            and i.enabled
            and i.status in (ResourceStatus.HEALTHY, ResourceStatus.DEGRADED)
            and self._missing(i, params) is None
            and state(i).busy_until <= now
            for i in self.instances
        )

    def no_instance_error(
        self, method: str, params: dict, instances: list[ResourceInstance]
    ) -> HubError | None:
        if method not in fields.MODEL_METHODS or not instances:
            return None
        model = self._model(params)
        if any(served_name(state(i), model) for i in instances):
            return None  # it exists, on drained or broken servers: the hub's error says so
        asked = ", ".join(i.id for i in instances)
        unknown = [i.id for i in instances if state(i).models is None]
        if unknown:
            why = [f"{i.id}: {state(i).unlisted}" for i in instances if state(i).unlisted]
            return NoResourceAvailable(
                f"no reachable {self.name} server serves '{model}' (asked: {asked})",
                hint="; ".join(why)
                or f"{', '.join(unknown)} did not list their models yet; check they are up",
            )
        have = sorted(set().union(*(state(i).models or set() for i in instances)))
        return UserError(
            f"model '{model}' is not served by any {self.name} server (asked: {asked})",
            hint=f"served: {', '.join(have) or 'none'}",
        )

    def instance_extras(self, instance: ResourceInstance) -> dict[str, Any]:
        st = state(instance)
        queue = None
        if st.queue is not None:
            queue = {"engine": st.queue[0], "running": st.queue[1], "waiting": st.queue[2]}
        return {
            "tokens_per_s": tokens_per_s(st.samples),
            "skipped": st.skipped,
            "queue": queue,
            "routing": self.fleet.snapshot(instance.id),
        }

    def pool_extras(self, instances: list[ResourceInstance]) -> dict[str, Any]:
        return {
            "tokens_per_s": tokens_per_s([s for i in instances for s in state(i).samples]),
            "routing": "fleet: each call goes where it is expected to finish first (learned"
            " speed, calls queued there incl. the engine's own /metrics queue)"
            if self.strategy == "fleet"
            else self.strategy,
        }

    # ---- pool-wide -------------------------------------------------------------------
    async def list_models(self) -> dict[str, Any]:
        """Union of ``/v1/models`` over the pool: which servers serve each model."""
        if not self.initialized:
            raise NoResourceAvailable(
                f"the {self.name} provider is not running", hint="await provider.initialize()"
            )
        live = [
            i
            for i in self.instances
            if i.status not in (ResourceStatus.DRAINING, ResourceStatus.STOPPED)
        ]
        outcomes = await asyncio.gather(
            *(self.refresh_models(i) for i in live), return_exceptions=True
        )
        models: dict[str, dict[str, Any]] = {}
        reach: dict[str, Any] = {}
        for inst, outcome in zip(live, outcomes, strict=True):
            st = state(inst)
            reach[inst.id] = {
                "reachable": not isinstance(outcome, BaseException),
                "models": len(st.models or ()),
            }
            for name, meta in st.catalog.items():
                entry = models.setdefault(
                    name,
                    {
                        "name": name,
                        "size": None,
                        "details": {"family": meta.get("owned_by")},
                        "instances": [],
                        "loaded_on": [],
                    },
                )
                entry["instances"].append(inst.id)
                entry["loaded_on"].append(inst.id)  # an OpenAI server serves what it lists
        return {"models": [models[k] for k in sorted(models)], "instances": reach}


def _model_rows(r: httpx.Response) -> list[Any] | None:
    """The ``data`` list of a ``/v1/models`` answer; None when it is not one (a web app's
    page, say)."""
    try:
        body = r.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    rows = body.get("data") or []  # none listed: a server with no model loaded yet
    return rows if isinstance(rows, list) else None


def tokens_per_s(samples: Any) -> float | None:
    """Tokens generated per second of generation time, over (count, ns) samples."""
    ns = sum(s[1] for s in samples)
    if not ns:
        return None
    value = sum(s[0] for s in samples) / (ns / 1e9)
    return round(value, 2) if math.isfinite(value) else None
