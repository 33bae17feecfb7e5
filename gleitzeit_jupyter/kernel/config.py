"""Configuration of the notebook runtime: the ``Gleitzeit`` traitlets Configurable.

``%config Gleitzeit.ollama_hosts = [...]`` in a notebook, ``c.Gleitzeit.ollama_hosts = [...]``
in ``ipython_config.py``; defaults come from ``GLEITZEIT_OLLAMA_HOSTS`` / ``OLLAMA_HOST`` /
``GLEITZEIT_OPENAI_HOSTS`` / ``OPENAI_API_KEY`` / ``GLEITZEIT_MODEL`` / ``DOCKER_HOST`` and
work on a laptop with Ollama on its default port.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from traitlets import Bool, Float, Int, List, TraitError, Unicode, default, observe, validate
from traitlets.config import Configurable

from ..hub import UserError
from ..providers.hosts import DEFAULT_HOST, env_hosts, parse_host
from .llm_args import strategy_problem

__all__ = ["DEFAULT_OLLAMA_HOST", "Gleitzeit", "SettingError", "hosts_from_env", "normalize_host"]

DEFAULT_OLLAMA_HOST = DEFAULT_HOST

log = logging.getLogger(__name__)


class SettingError(TraitError):
    """A rejected ``%config Gleitzeit.NAME = value``. A TraitError, so traitlets rolls the
    setting back; shown as IPython shows a usage error, one line without the traceback
    through traitlets (IPython's own UsageError handling matches that class exactly)."""

    def _render_traceback_(self) -> list[str]:
        return [f"UsageError: {self}"]


class _Secret(str):
    """A key that reads as itself but shows as ``'***'``: ``%config Gleitzeit`` prints each
    setting's repr, and a notebook's outputs get shared."""

    def __repr__(self) -> str:
        return "'***'" if self else "''"


def _live_runtime() -> Any:
    # Imported here: the runtime module imports this one.
    from .runtime import current_runtime

    return current_runtime()


def normalize_host(host: str) -> str:
    """``OLLAMA_HOST`` style (``0.0.0.0``, ``host:port``, ``https://host``) to a base URL, by
    Ollama's own client rules (see :mod:`gleitzeit_jupyter.providers.hosts`)."""
    return parse_host(host)


def hosts_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Ollama hosts named by the environment: ``GLEITZEIT_OLLAMA_HOSTS`` (comma separated)
    wins over ``OLLAMA_HOST``; neither set gives the laptop default."""
    return env_hosts(environ) or [DEFAULT_OLLAMA_HOST]


class Gleitzeit(Configurable):
    """Configuration of the notebook runtime (``%config Gleitzeit.ollama_hosts = [...]``)."""

    ollama_hosts = List(
        Unicode(),
        help="Ollama base URLs. Default: $GLEITZEIT_OLLAMA_HOSTS (comma separated), else"
        " $OLLAMA_HOST, else http://127.0.0.1:11434.",
    ).tag(config=True)
    openai_hosts = List(
        Unicode(),
        help="OpenAI-compatible servers (vLLM, llama.cpp, LM Studio, SGLang, TGI) as base URLs"
        " ('http://gpu-2:8000/v1'; no path: /v1 is added). Default: $GLEITZEIT_OPENAI_HOSTS"
        " (comma separated), else none.",
    ).tag(config=True)
    openai_api_key = Unicode(
        help="Key sent as 'Authorization: Bearer' to the OpenAI-compatible servers"
        " (default: $OPENAI_API_KEY; local servers usually need none).",
    ).tag(config=True)
    auto_discover = Bool(
        False, help="Also probe for Ollama servers on the local machine and network."
    ).tag(config=True)
    strategy = Unicode("fleet", help="Load-balancing strategy of the LLM pools.").tag(config=True)
    default_model = Unicode(
        help="Model used when %%llm gets no -m (default: $GLEITZEIT_MODEL or llama3.2)."
    ).tag(config=True)
    request_timeout = Float(0.0, help="Deadline in seconds for one %%llm call; 0 means none.").tag(
        config=True
    )
    stream_interval = Float(
        0.1, help="Minimum seconds between two updates of a streaming output."
    ).tag(config=True)
    map_concurrency = Int(8, help="Default --concurrency of %%llm --map.").tag(config=True)
    docker_host = Unicode(
        help="Docker engine URL for the sandbox (default: $DOCKER_HOST, else the local socket)."
    ).tag(config=True)
    sandbox_image = Unicode("", help="Sandbox image; empty: the provider's default.").tag(
        config=True
    )
    sandbox_runtime = Unicode(
        "",
        help="OCI runtime of the sandbox containers, e.g. 'runsc' (gVisor: a kernel of its own"
        " between the code and the host); empty: the engine's default (runc).",
    ).tag(config=True)
    sandbox_max_containers = Int(4, help="Upper bound of warm sandbox containers.").tag(config=True)
    sandbox_timeout = Float(30.0, help="Default --timeout of %%sandbox, in seconds.").tag(
        config=True
    )

    @default("ollama_hosts")
    def _default_hosts(self) -> list[str]:
        return hosts_from_env()

    @default("openai_hosts")
    def _default_openai_hosts(self) -> list[str]:
        from ..providers.openai import base_url

        urls = []
        for value in os.environ.get("GLEITZEIT_OPENAI_HOSTS", "").split(","):
            if value.strip():
                try:
                    urls.append(base_url(value))
                except UserError as exc:  # one typo must not lose the other servers
                    # the error names the entry (without any password in it)
                    log.warning("GLEITZEIT_OPENAI_HOSTS: skipping an entry: %s", exc)
        return list(dict.fromkeys(urls))

    @default("default_model")
    def _default_model(self) -> str:
        return os.environ.get("GLEITZEIT_MODEL", "llama3.2")

    @default("docker_host")
    def _default_docker_host(self) -> str:
        return os.environ.get("DOCKER_HOST", "")

    @validate("strategy")
    def _check_strategy(self, proposal: Any) -> str:
        problem = strategy_problem(proposal["value"])
        if problem is not None:
            raise SettingError(f"Gleitzeit.strategy: {problem}")
        return str(proposal["value"])

    @observe("ollama_hosts", "auto_discover", "strategy")
    def _ollama_changed(self, change: Any) -> None:
        # A pool built from the old settings would silently keep using them: drop it, the
        # next call builds a new one from the current configuration.
        rt = _live_runtime()
        if rt is None or rt.config_owner is not self:
            return
        current = rt.providers.get("ollama")
        if change["name"] == "strategy" and getattr(current, "strategy", None) == change["new"]:
            return  # %gleitzeit strategy already switched the running pool
        rt.discard_provider("ollama")

    @validate("openai_hosts")
    def _check_openai_hosts(self, proposal: Any) -> list[str]:
        from ..providers.openai import base_url

        try:
            return [base_url(h) for h in proposal["value"]]
        except UserError as exc:
            raise SettingError(f"Gleitzeit.openai_hosts: {exc}") from None

    @validate("openai_api_key")
    def _hide_key(self, proposal: Any) -> str:
        return _Secret(proposal["value"])

    @observe("openai_hosts", "openai_api_key")
    def _openai_changed(self, change: Any) -> None:
        rt = _live_runtime()
        if rt is not None and rt.config_owner is self:
            rt.discard_provider("openai")

    @observe("strategy")
    def _openai_strategy(self, change: Any) -> None:
        # Switched in place: rebuilding the pool would drop servers added at run time.
        rt = _live_runtime()
        if rt is None or rt.config_owner is not self:
            return
        pool, ollama = rt.providers.get("openai"), rt.providers.get("ollama")
        if pool is None or pool.strategy == change["new"]:
            return
        if getattr(ollama, "strategy", None) == change["new"]:
            return  # %gleitzeit strategy switched the pools it was asked to, and no other

        async def switch() -> None:
            pool.set_strategy(change["new"])  # on the runtime loop, which owns pool state

        rt.run(switch(), timeout=30)

    @observe("docker_host", "sandbox_image", "sandbox_runtime", "sandbox_max_containers")
    def _sandbox_changed(self, change: Any) -> None:
        if getattr(self, "_pool_swapped", False):
            return  # %sandbox install already put a pool with the new image in place
        rt = _live_runtime()
        if rt is not None and rt.config_owner is self:
            for name in [n for n in rt.providers if n.startswith("sandbox")]:
                rt.discard_provider(name)
