"""The models each Ollama server has (``/api/tags``), holds in memory (``/api/ps``) and what
they can do (``/api/show``): read at each health check, after a 404, and for ``llm/models``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ..hub import NoResourceAvailable, ResourceInstance, ResourceStatus
from ..hub.fleet import Fleet
from . import _bounded
from . import _ollama_wire as wire
from ._bounded import ResponseLimits
from ._ollama_state import state as _state

__all__ = ["OllamaCatalogMixin"]


class OllamaCatalogMixin:
    """Health and model-catalogue hooks of
    :class:`~gleitzeit_jupyter.providers.ollama.OllamaProvider`."""

    fleet: Fleet
    instances: list[ResourceInstance]
    initialized: bool
    model_refresh_interval: float
    response_limits: ResponseLimits
    refreshing: set[asyncio.Task[None]]  # refreshes started by refresh_soon, until done

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

    def refresh_soon(self, instance: ResourceInstance) -> None:
        # After a 404 the model list is stale: re-read it now, not at the next health check.
        task = asyncio.ensure_future(self._refresh_models(instance))
        self.refreshing.add(task)
        task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self.refreshing.discard(task)
        if not task.cancelled():
            task.exception()  # read: a failed refresh is the health check's business

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
                caps = st.capabilities.get(name)
                if caps is not None:  # learned from /api/show; /api/tags does not carry them
                    entry["capabilities"] = sorted({*entry.get("capabilities", ()), *caps[1]})
        return {"models": [models[k] for k in sorted(models)], "instances": reach}
