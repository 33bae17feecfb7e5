"""gleitzeit-jupyter: pooled, health-checked, load-balanced Ollama and OpenAI-compatible
servers and a warm Docker Python sandbox, behind ``%%llm`` and ``%%sandbox`` in Jupyter.

The hub names import eagerly (they are light); the providers and the IPython extension load
on first use, so ``import gleitzeit_jupyter`` stays cheap and needs neither httpx nor docker.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .hub import (
    CircuitState,
    ExecutionTimeout,
    HubError,
    HubEvent,
    HubProvider,
    NoResourceAvailable,
    ResourceFailed,
    ResourceInstance,
    ResourceStatus,
    UserError,
)

__version__ = "0.1.0"

_LAZY = {
    "OllamaProvider": "gleitzeit_jupyter.providers.ollama",
    "OllamaProviderStreamlined": "gleitzeit_jupyter.providers.ollama",
    "OllamaConfig": "gleitzeit_jupyter.providers.ollama",
    "OpenAIProvider": "gleitzeit_jupyter.providers.openai",
    "OpenAIConfig": "gleitzeit_jupyter.providers.openai",
    "PythonProvider": "gleitzeit_jupyter.providers.sandbox",
    "PythonProviderStreamlined": "gleitzeit_jupyter.providers.sandbox",
    "DockerConfig": "gleitzeit_jupyter.providers.sandbox",
    "load_ipython_extension": "gleitzeit_jupyter.kernel",
    "unload_ipython_extension": "gleitzeit_jupyter.kernel",
}

__all__ = [
    "CircuitState",
    "DockerConfig",
    "ExecutionTimeout",
    "HubError",
    "HubEvent",
    "HubProvider",
    "NoResourceAvailable",
    "OllamaConfig",
    "OllamaProvider",
    "OllamaProviderStreamlined",
    "OpenAIConfig",
    "OpenAIProvider",
    "PythonProvider",
    "PythonProviderStreamlined",
    "ResourceFailed",
    "ResourceInstance",
    "ResourceStatus",
    "UserError",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gleitzeit_jupyter' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def _status_panel(provider: HubProvider) -> Any:
    # Imported on first use: building a panel needs ipywidgets, importing the package doesn't.
    return import_module("gleitzeit_jupyter.kernel.widgets").status_panel(provider)


HubProvider.panel_factory = _status_panel


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "gleitzeit-jupyter"}]
