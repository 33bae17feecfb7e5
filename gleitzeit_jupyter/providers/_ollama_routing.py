"""Routing hooks of OllamaProvider: which server can take a call (it lists the model, and
the model has the capabilities the call needs), which is preferred, and why none could."""

from __future__ import annotations

import time
from typing import Any

from ..hub import (
    HubError,
    NoResourceAvailable,
    ResourceInstance,
    ResourceStatus,
    UserError,
)
from ..hub.fleet import Fleet
from . import _ollama_wire as wire
from ._ollama_state import state as _state

__all__ = ["OllamaRoutingMixin"]


class OllamaRoutingMixin:
    """Routing hooks of :class:`~gleitzeit_jupyter.providers.ollama.OllamaProvider`."""

    fleet: Fleet
    instances: list[ResourceInstance]
    strategy: str
    default_model: str | None

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

    def elsewhere(self, instance: ResourceInstance, method: str, params: dict) -> bool:
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


_WHY = {
    "fleet": "fleet: each call goes where it is expected to finish first (learned speed and"
    " slots, calls queued there, a cold load if the model is not in memory)",
}


def _tokens_per_s(samples: Any) -> float | None:
    """Tokens generated per second of generation time, over (eval_count, eval_ns) samples."""
    ns = sum(s[1] for s in samples)
    return round(sum(s[0] for s in samples) / (ns / 1e9), 2) if ns else None
