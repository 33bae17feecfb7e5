"""Server addresses of the OpenAI pool: the base URL OpenAI clients take, read from what a
user types (``gpu-2:8000``, a pasted endpoint URL, ``0.0.0.0``), never echoing credentials."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..hub import UserError

__all__ = ["KEY_SETTING", "base_url"]

KEY_SETTING = "api_key=..., $OPENAI_API_KEY or %config Gleitzeit.openai_api_key"


_ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/models")


def base_url(value: str) -> str:
    """A server as the base URL OpenAI clients take: ``http`` when no scheme is given,
    ``/v1`` when no path is (``gpu-2:8000`` → ``http://gpu-2:8000/v1``)."""
    text = (value or "").strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    scheme, _, rest = text.partition("://")
    netloc = rest.split("/", 1)[0]
    if "@" in netloc:
        # Never echoed: error messages and logs end up in notebooks.
        shown = f"{scheme}://***@{rest.split('@', 1)[1]}"
        raise UserError(
            f"server URL {shown!r} holds credentials, which are not sent",
            hint=f"drop them from the URL and set the key: {KEY_SETTING}",
        )
    shown = repr(value)
    try:
        split = urlsplit(text)
        port = split.port
    except ValueError as exc:
        raise UserError(f"cannot read server URL {shown}: {exc}") from None
    if split.scheme not in ("http", "https") or not split.hostname:
        raise UserError(
            f"cannot read server URL {shown}", hint="write it as http(s)://host:port/v1"
        )
    host = "127.0.0.1" if split.hostname in ("0.0.0.0", "::") else split.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    path = split.path
    # An endpoint's URL pasted for the base one: the pool adds the endpoint itself.
    for endpoint in _ENDPOINTS:
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
            break
    return f"{split.scheme}://{netloc}{path or '/v1'}"
