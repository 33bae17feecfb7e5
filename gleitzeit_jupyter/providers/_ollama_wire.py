"""Translation between gleitzeit calls and Ollama's HTTP API (docs/api.md of ollama/ollama).

Kept apart from the provider so the mapping (request bodies, result fields, error classes) can
be read, and tested, in one place.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..hub import ExecutionTimeout, HubError, ResourceFailed, UserError
from ..hub.fleet import figure
from . import _bounded
from ._ollama_fields import (
    CHAT,
    CONVENIENCE_OPTIONS,
    EMBED,
    FIELDS,
    GENERATE,
    METHODS,
    MODEL_METHODS,
    MODELS,
    PATHS,
    check_params,
    needs,
    normalize_model,
)

__all__ = [
    "CHAT",
    "CONVENIENCE_OPTIONS",
    "EMBED",
    "GENERATE",
    "METHODS",
    "MODELS",
    "MODEL_METHODS",
    "PATHS",
    "build_body",
    "check_params",
    "encode_body",
    "error_message",
    "figure",
    "first_line",
    "http_error",
    "needs",
    "normalize_model",
    "post_json",
    "shape_chunk",
    "shape_result",
    "transport_error",
]


def build_body(
    method: str, params: dict[str, Any], default_model: str | None, stream: bool
) -> tuple[str, dict[str, Any], str]:
    """Return (path, JSON body, normalized model) for Ollama."""
    asked = params.get("stream")
    if asked is not None and asked is not stream:
        use = "stream()" if asked else "execute()"
        raise UserError(f"stream={asked!r} asks for {use}; this call was made with the other")
    body: dict[str, Any] = {k: params[k] for k in FIELDS[method] if k in params}
    model = str(params.get("model") or default_model)
    body["model"] = model
    options = dict(body.get("options") or {})
    for key, target in CONVENIENCE_OPTIONS.items():
        if key in params and params[key] is not None:
            options[target] = params[key]
    if options:
        body["options"] = options
    if method != EMBED:
        body["stream"] = stream  # Ollama streams unless told otherwise
    return PATHS[method], body, normalize_model(model)


def _plain(value: Any) -> Any:
    """JSON for values that are numbers or arrays in disguise (numpy scalars and arrays, as
    they come out of a DataFrame): duck-typed, so numpy need not be importable."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# allow_nan=False: JSON has no NaN or Infinity, and Ollama rejects a body that holds them
_encoder = json.JSONEncoder(
    default=_plain, ensure_ascii=False, separators=(",", ":"), allow_nan=False
)


def encode_body(body: dict[str, Any], params: dict[str, Any]) -> bytes:
    """The request body as JSON bytes. A value that cannot be sent is the caller's mistake:
    a UserError naming the parameter, never an infrastructure failure."""
    try:
        return _encoder.encode(body).encode()
    except (TypeError, ValueError) as exc:
        for name, value in params.items():
            try:
                _encoder.encode(value)
            except (TypeError, ValueError):
                raise UserError(
                    f"parameter {name!r} cannot be sent to Ollama: {exc}",
                    hint="pass strings, numbers, lists and dicts (numpy values are converted)",
                ) from None
        raise UserError(f"the request cannot be encoded as JSON: {exc}") from None


JSON_HEADERS = {"Content-Type": "application/json"}


async def post_json(
    transport: httpx.AsyncBaseTransport,
    url: httpx.URL,
    body: bytes,
    extensions: dict[str, Any],
    limit: int,
    ident: str,
) -> httpx.Response:
    """POST and read the whole answer (at most ``limit`` bytes), straight through the
    client's transport.

    The hot path of a batch: it skips ``AsyncClient.send`` (auth, redirects, cookies, event
    hooks; none used here), which measured about a quarter of httpx's client CPU per call.
    Same pool, same timeouts (``extensions``), same httpx exceptions.
    """
    request = httpx.Request("POST", url, content=body, headers=JSON_HEADERS, extensions=extensions)
    response = await transport.handle_async_request(request)
    try:
        return await _bounded.read(response, limit, ident, request)
    finally:
        await response.aclose()  # on cancellation too: a half-read answer closes its socket


async def first_line(
    client: httpx.AsyncClient,
    request: httpx.Request,
    timeout: float | None,
    ident: str,
    max_line: int,
) -> tuple[httpx.Response, AsyncIterator[str], str | None]:
    """Send a streaming request and read up to its first NDJSON line within ``timeout``.
    Returns the line iterator too: a response's lines can be iterated only once. No line
    may be longer than ``max_line`` bytes."""

    async def go() -> tuple[httpx.Response, AsyncIterator[str], str | None]:
        resp = await client.send(request, stream=True)
        try:
            lines = _bounded.lines(resp, max_line, ident)
            if resp.status_code != 200:
                return resp, lines, None
            return resp, lines, await anext(lines, None)
        except BaseException:
            await resp.aclose()  # timed out or cancelled before the caller owns it
            raise

    if timeout is None:
        return await go()
    try:
        async with asyncio.timeout(timeout):
            return await go()
    except TimeoutError:
        raise ExecutionTimeout(
            f"no first token from {ident} within {timeout:g} s", instance=ident
        ) from None


def _ms(ns: Any) -> float | None:
    value = figure(ns)
    return None if value is None else round(value / 1e6, 3)


_KEPT = (
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "context",
    "logprobs",
)


def shape_result(
    method: str, data: dict[str, Any], latency_ms: float, ttft_ms: float | None, instance: str
) -> dict[str, Any]:
    """A final Ollama object as a gleitzeit result (usage fields under readable names)."""
    eval_count = data.get("eval_count")
    count, eval_ns = figure(eval_count), figure(data.get("eval_duration"))
    tps = None
    if count is not None and eval_ns:
        tps = count / (eval_ns / 1e9)
        tps = round(tps, 2) if math.isfinite(tps) else None
    if ttft_ms is None and eval_ns is not None:
        # Not streamed: the first token came about eval_duration before the end.
        ttft_ms = max(0.0, latency_ms - eval_ns / 1e6)
    out: dict[str, Any] = {}
    if method == CHAT:
        msg = data.get("message") or {}
        out["message"] = msg
        out["response"] = msg.get("content", "")
        if msg.get("thinking"):
            out["thinking"] = msg["thinking"]
        if msg.get("tool_calls"):
            out["tool_calls"] = msg["tool_calls"]
    elif method == EMBED:
        out["embeddings"] = data.get("embeddings", [])
    else:
        out["response"] = data.get("response", "")
        if data.get("thinking"):
            out["thinking"] = data["thinking"]
    # Ollama's own names too, so a result reads like Ollama's docs say it does.
    for key in _KEPT:
        if key in data:
            out[key] = data[key]
    out.update(
        model=data.get("model"),
        instance=instance,
        latency_ms=round(latency_ms, 3),
        time_to_first_token_ms=None if ttft_ms is None else round(ttft_ms, 3),
        prompt_tokens=data.get("prompt_eval_count"),
        completion_tokens=eval_count,
        tokens_per_s=tps,
        load_ms=_ms(data.get("load_duration")),
        total_ms=_ms(data.get("total_duration")),
        done_reason=data.get("done_reason"),
    )
    return out


def shape_chunk(method: str, data: dict[str, Any]) -> dict[str, Any]:
    """A streamed, not-final NDJSON object as a chunk; ``response`` is always the new text."""
    if method == CHAT:
        msg = data.get("message") or {}
        out = {"message": msg, "response": msg.get("content", "")}
        if msg.get("thinking"):
            out["thinking"] = msg["thinking"]
        if msg.get("tool_calls"):
            out["tool_calls"] = msg["tool_calls"]
    else:
        out = {"response": data.get("response", "")}
        if data.get("thinking"):
            out["thinking"] = data["thinking"]
    if "logprobs" in data:
        out["logprobs"] = data["logprobs"]
    out["model"] = data.get("model")
    out["done"] = False
    return out


def error_message(resp_text: str) -> str:
    try:
        data = json.loads(resp_text)
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    return resp_text.strip()[:200] or "(empty body)"


def http_error(status: int, text: str, instance: str, model: str) -> HubError:
    """Map an Ollama error status: 400/404 are the caller's, 503/5xx the server's."""
    msg = error_message(text)
    if status == 404:
        return UserError(
            f"model '{model}' not found on {instance}: {msg}",
            instance=instance,
            hint=f"pull it there (`ollama pull {model}`) or pick another model",
        )
    if status == 503:
        return ResourceFailed(f"Ollama at {instance} is busy: {msg}", instance=instance)
    if status in (408, 429) or status >= 500:
        return ResourceFailed(f"Ollama at {instance} answered {status}: {msg}", instance=instance)
    return UserError(f"Ollama at {instance} rejected the call ({status}): {msg}", instance=instance)


def transport_error(exc: httpx.HTTPError, instance: str, url: str, timeout: float) -> HubError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        # No connection, so no request: it provably never reached the server. (A read or
        # protocol error after connecting may come after Ollama took the request.)
        return ResourceFailed(
            f"cannot connect to Ollama at {url}",
            instance=instance,
            hint="is `ollama serve` running there?",
            started=False,
        )
    if isinstance(exc, httpx.ReadTimeout):
        return ExecutionTimeout(
            f"Ollama at {url} sent nothing for {timeout:g} s", instance=instance
        )
    if isinstance(exc, httpx.PoolTimeout):
        return ResourceFailed(f"all connections to {url} stayed busy", instance=instance)
    detail = str(exc) or type(exc).__name__
    return ResourceFailed(f"connection to Ollama at {url} failed: {detail}", instance=instance)
