"""Providers: concrete HubProviders. Loaded lazily, so importing one does not pull in the
dependencies of the others (httpx for the LLM servers, the docker SDK for the sandbox)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "OllamaProvider": "gleitzeit_jupyter.providers.ollama",
    "OllamaProviderStreamlined": "gleitzeit_jupyter.providers.ollama",
    "OllamaConfig": "gleitzeit_jupyter.providers.ollama",
    "OpenAIProvider": "gleitzeit_jupyter.providers.openai",
    "OpenAIConfig": "gleitzeit_jupyter.providers.openai",
    "ResponseLimits": "gleitzeit_jupyter.providers._bounded",
    "PythonProvider": "gleitzeit_jupyter.providers.sandbox",
    "PythonProviderStreamlined": "gleitzeit_jupyter.providers.sandbox",
    "DockerConfig": "gleitzeit_jupyter.providers.sandbox",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gleitzeit_jupyter.providers' has no attribute {name!r}")
    return getattr(import_module(module), name)
