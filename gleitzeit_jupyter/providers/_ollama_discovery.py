"""Finding Ollama servers: those ``OLLAMA_HOST`` / ``GLEITZEIT_OLLAMA_HOSTS`` name, and any
answering ``/api/version`` on the scanned local ports."""

from __future__ import annotations

import asyncio
import logging

import httpx

from ..hub import ResourceFailed, UserError
from . import _bounded
from ._bounded import ResponseLimits
from .hosts import env_host_values, parse_host

__all__ = ["DEFAULT_SCAN_PORTS", "OllamaDiscoveryMixin"]

log = logging.getLogger(__name__)

DEFAULT_SCAN_PORTS = tuple(range(11434, 11440))
_PROBE_TIMEOUT = 0.5


class OllamaDiscoveryMixin:
    """Discovery of :class:`~gleitzeit_jupyter.providers.ollama.OllamaProvider`."""

    name: str
    scan_host: str
    scan_ports: tuple[int, ...]
    response_limits: ResponseLimits
    bad_hosts: set[str]  # environment entries already reported unreadable

    async def discover_urls(self) -> list[str]:
        """The servers the environment names, then any answering on the scanned ports."""
        named = self._named_hosts()  # the user named these: kept even while they are down
        scanned = [parse_host(f"{self.scan_host}:{p}") for p in self.scan_ports]
        scanned = [u for u in scanned if u not in named]
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT) as probe:
            answers = await asyncio.gather(*(self._probe(probe, u) for u in scanned))
        urls = dict.fromkeys(named + [u for u, ok in zip(scanned, answers, strict=True) if ok])
        return list(urls)

    def _named_hosts(self) -> list[str]:
        # Each entry on its own: one typo in a list of servers must not empty the pool of
        # the others (discovery failing as a whole would add none of them). The bad entry
        # is reported once, not at every discovery pass.
        urls = []
        for value in env_host_values():
            try:
                urls.append(parse_host(value))
            except UserError as exc:
                if value not in self.bad_hosts:
                    self.bad_hosts.add(value)
                    log.warning("%s: skipping Ollama host from the environment: %s", self.name, exc)
        return list(dict.fromkeys(urls))

    async def _probe(self, client: httpx.AsyncClient, url: str) -> bool:
        try:
            limit = self.response_limits.body
            r = await _bounded.request(client, "GET", f"{url}/api/version", limit, url)
            return r.status_code == 200 and "version" in r.json()
        except (httpx.HTTPError, ValueError, TypeError, ResourceFailed):  # not an Ollama there
            return False
