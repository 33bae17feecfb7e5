"""Where Ollama servers are: one set of rules for host strings and the environment.

The rules are Ollama's own client's (``ollama._client._parse_host``, the same as the server's
``envconfig.Host``), so a value that works for ``ollama`` on the command line names the same
server here:

- no scheme: ``http``, and port 11434 (``gpu-box`` → ``http://gpu-box:11434``);
- ``http://host`` without a port: 80; ``https://host`` without a port: 443;
- IPv6 literals with or without brackets (``::1``, ``[::1]:9000``); a path is kept;
- a bind-all address (``0.0.0.0``, ``::``), which is what a server's ``OLLAMA_HOST`` often
  says, is dialled on loopback.

The environment: ``GLEITZEIT_OLLAMA_HOSTS`` (comma separated) names the pool and wins over
``OLLAMA_HOST``, which names one server. Kernel configuration and discovery both read it
through :func:`env_hosts`.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..hub import UserError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "env_host_values", "env_hosts", "parse_host"]

DEFAULT_PORT = 11434
DEFAULT_HOST = f"http://127.0.0.1:{DEFAULT_PORT}"
_BIND_ALL = {"0.0.0.0", "::"}


def _bracket_bare_ipv6(hostport: str) -> str:
    # "::1" or "fe80::1" without brackets: urlsplit would read the last group as a port.
    if hostport.startswith("[") or hostport.count(":") < 2:
        return hostport
    host, sep, path = hostport.partition("/")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return hostport
    return f"[{host}]{sep}{path}"


def parse_host(value: str | None) -> str:
    """An ``OLLAMA_HOST``-style value as a base URL (``scheme://host:port[/path]``).

    Raises :class:`UserError` (never a bare ValueError) for a value no client could dial.
    """
    text = (value or "").strip()
    port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise UserError(
            f"Ollama host {value!r} has scheme {scheme!r}", hint="use http:// or https://"
        )
    hostport = _bracket_bare_ipv6(hostport)
    try:
        split = urlsplit(f"{scheme}://{hostport}")
        host = split.hostname or "127.0.0.1"
        port = split.port or port
    except ValueError as exc:
        raise UserError(
            f"cannot read Ollama host {value!r}: {exc}",
            hint="write it as host, host:port or http(s)://host:port",
        ) from None
    if host in _BIND_ALL:
        host = "127.0.0.1"
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
    except ValueError:
        pass  # a name, not an address
    path = split.path.strip("/")
    return f"{scheme}://{host}:{port}/{path}" if path else f"{scheme}://{host}:{port}"


def env_hosts(environ: Mapping[str, str] | None = None) -> list[str]:
    """Ollama servers the environment names, as base URLs, each once; [] when it names none.

    ``GLEITZEIT_OLLAMA_HOSTS`` wins over ``OLLAMA_HOST``: a user who lists a pool does not
    also want the one server the Ollama CLI is pointed at.
    """
    return list(dict.fromkeys(parse_host(h) for h in env_host_values(environ)))


def env_host_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The host strings the environment names, unparsed (same precedence as
    :func:`env_hosts`), for a caller that reads each one on its own."""
    env = os.environ if environ is None else environ
    many = [h.strip() for h in env.get("GLEITZEIT_OLLAMA_HOSTS", "").split(",") if h.strip()]
    if not many:
        one = env.get("OLLAMA_HOST", "").strip()
        many = [one] if one else []
    return many
