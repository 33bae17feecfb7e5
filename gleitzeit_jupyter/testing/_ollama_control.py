"""Stand-in only (not Ollama): endpoints to change the knobs of, and read the counters of, a
stand-in running in another process."""

from __future__ import annotations

from typing import Any

from ._ollama_http import Responder
from ._ollama_memory import ModelMemory
from ._ollama_model import Faults, normalize_model

__all__ = ["ControlEndpoints"]


class ControlEndpoints:
    """Control endpoints of :class:`~gleitzeit_jupyter.testing._ollama_api.OllamaApi`."""

    models: list[str]
    memory: ModelMemory
    faults: Faults
    capabilities: dict[str, list[str]]
    served: dict[str, int]
    active: int
    waiting: int
    peak_active: int
    loaded: set[str]

    async def control(self, body: dict[str, Any], resp: Responder) -> None:
        """Stand-in only (not Ollama): change knobs of a stand-in running in another process."""
        try:
            self.faults.update(**body.get("faults", {}))
        except AttributeError as exc:
            await resp.send_json(400, {"error": str(exc)})
            return
        for key in ("latency", "tokens_per_s", "load_time", "default_tokens", "max_loaded"):
            if key in body:
                setattr(self, key, body[key])
        if "models" in body:
            self.models = [normalize_model(m) for m in body["models"]]
        if "loaded" in body:
            self.loaded = {normalize_model(m) for m in body["loaded"]}
        if "capabilities" in body:
            self.capabilities = {normalize_model(k): v for k, v in body["capabilities"].items()}
        await resp.send_json(200, self.stats())

    async def stats_ep(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(200, self.stats())

    def stats(self) -> dict[str, Any]:
        return {
            "served": dict(self.served),
            "active": self.active,
            "waiting": self.waiting,
            "peak_active": self.peak_active,
            "models": self.models,
            "loaded": sorted(self.loaded),
            "loads": dict(self.memory.loads),
            "evictions": dict(self.memory.evictions),
            "faults": vars(self.faults),
        }
