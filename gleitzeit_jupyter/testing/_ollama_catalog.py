"""The stand-in's model catalogue endpoints: ``/api/tags``, ``/api/ps``, ``/api/show``,
``/api/version`` and ``/``, shaped as Ollama's docs/api.md shows them."""

from __future__ import annotations

from typing import Any

from ._ollama_http import Responder
from ._ollama_memory import ModelMemory
from ._ollama_model import details, digest, now_iso

__all__ = ["CatalogEndpoints"]


class CatalogEndpoints:
    """Catalogue endpoints of :class:`~gleitzeit_jupyter.testing._ollama_api.OllamaApi`."""

    models: list[str]
    memory: ModelMemory
    version: str

    def check_model(self, body: dict[str, Any]) -> tuple[str | None, tuple[int, str] | None]:
        raise NotImplementedError

    def capabilities_of(self, model: str) -> list[str]:
        raise NotImplementedError

    async def tags(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(
            200,
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2025-01-01T00:00:00.000000Z",
                        "size": 2019393189,
                        "digest": digest(m),
                        "details": details(m),
                    }
                    for m in self.models
                ]
            },
        )

    async def ps(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(
            200,
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "size": 3155000000,
                        "digest": digest(m),
                        "details": details(m),
                        "expires_at": now_iso(300),
                        "size_vram": 3155000000,
                        "context_length": 4096,
                    }
                    for m in self.memory.ordered()
                    if m in self.models
                ]
            },
        )

    async def show(self, body: dict[str, Any], resp: Responder) -> None:
        model, err = self.check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        await resp.send_json(
            200,
            {
                "modelfile": f"FROM {model}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": details(model),
                "model_info": {},
                "capabilities": self.capabilities_of(model),
                "modified_at": "2025-01-01T00:00:00.000000Z",
            },
        )

    async def version_ep(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(200, {"version": self.version})

    async def root(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send(200, b"Ollama is running", "text/plain; charset=utf-8")
