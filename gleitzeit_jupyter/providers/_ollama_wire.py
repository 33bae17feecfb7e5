"""Translation between gleitzeit calls and Ollama's HTTP API (docs/api.md of ollama/ollama).

Kept apart from the provider so the mapping (request bodies, result fields, error classes) can
be read, and tested, in one place.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ..hub import ExecutionTimeout, HubError, ResourceFailed, UserError

__all__ = [
    "CONVENIENCE_OPTIONS",
    "METHODS",
    "MODEL_METHODS",
    "build_body",
    "check_params",
    "encode_body",
    "error_message",
    "first_line",
    "http_error",
    "needs",
    "normalize_model",
    "post_json",
    "shape_chunk",
    "shape_result",
    "transport_error",
]

GENERATE, CHAT, EMBED, MODELS = "llm/generate", "llm/chat", "llm/embed", "llm/models"
METHODS = (GENERATE, CHAT, EMBED, MODELS)
MODEL_METHODS = frozenset({GENERATE, CHAT, EMBED})
PATHS = {GENERATE: "/api/generate", CHAT: "/api/chat", EMBED: "/api/embed"}

#: Ollama's own top-level request fields (its api/types.go and the official client's
#: request types), forwarded as they are. ``stream`` is checked against the call's kind.
FIELDS = {
    GENERATE: (
        "model",
        "prompt",
        "suffix",
        "system",
        "template",
        "context",
        "stream",
        "raw",
        "format",
        "keep_alive",
        "images",
        "options",
        "think",
        "logprobs",
        "top_logprobs",
        "truncate",
        "shift",
    ),
    CHAT: (
        "model",
        "messages",
        "tools",
        "stream",
        "format",
        "keep_alive",
        "options",
        "think",
        "logprobs",
        "top_logprobs",
        "truncate",
        "shift",
    ),
    EMBED: ("model", "input", "truncate", "options", "keep_alive", "dimensions"),
}
#: Keys of ``options`` Ollama documents (runner options, then sampling options).
OPTIONS = frozenset(
    {
        "numa",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "top_p",
        "min_p",
        "tfs_z",
        "typical_p",
        "repeat_last_n",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "penalize_newline",
        "stop",
    }
)
MESSAGE_FIELDS = frozenset(
    {"role", "content", "thinking", "images", "tool_calls", "tool_name", "tool_call_id"}
)
THINK_LEVELS = ("low", "medium", "high")
#: Convenience parameters that belong *inside* ``options`` (Ollama silently ignores them at
#: the top level, so forwarding them there would drop them without a word).
CONVENIENCE_OPTIONS = {
    "temperature": "temperature",
    "max_tokens": "num_predict",
    "num_predict": "num_predict",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "stop": "stop",
    "num_ctx": "num_ctx",
}
#: Read by the hub (fair queuing, priority, affinity); never sent to Ollama.
HUB_PARAMS = frozenset({"tenant", "priority", "affinity_key", "session"})


def normalize_model(name: str) -> str:
    """``llama3.2`` and ``llama3.2:latest`` are the same model: Ollama's tag defaults to
    ``latest``. A ``:`` inside a registry host (``host:5000/m``) is not a tag."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _check_images(images: Any, where: str) -> None:
    if not isinstance(images, list) or not all(_is_base64(i) for i in images):
        raise UserError(
            f"{where} must be a list of base64-encoded images",
            hint="base64.b64encode(open(path, 'rb').read()).decode()",
        )


def _check_message(msg: Any) -> None:
    if not isinstance(msg, dict) or "role" not in msg:
        raise UserError("llm/chat needs messages: a list of {'role': ..., 'content': ...}")
    unknown = sorted(set(msg) - MESSAGE_FIELDS)
    if unknown:
        raise UserError(
            f"a chat message does not take {', '.join(map(repr, unknown))}",
            hint=f"message fields: {', '.join(sorted(MESSAGE_FIELDS))}",
        )
    if "images" in msg:
        _check_images(msg["images"], "messages[].images")
    if "tool_calls" in msg and not isinstance(msg["tool_calls"], list):
        raise UserError("messages[].tool_calls must be a list of {'function': {...}}")


def _check_shapes(method: str, params: dict[str, Any]) -> None:
    """The documented types of the fields whose shape decides where a call can go."""
    fmt = params.get("format")
    if fmt is not None and fmt != "" and fmt != "json" and not isinstance(fmt, dict):
        raise UserError("format must be 'json' or a JSON schema (a dict)")
    think = params.get("think")
    if think is not None and not isinstance(think, bool) and think not in THINK_LEVELS:
        raise UserError(f"think must be true, false or one of {', '.join(THINK_LEVELS)}")
    if "images" in params:
        _check_images(params["images"], "images")
    tools = params.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise UserError("tools must be a list of {'type': 'function', 'function': {...}}")
    opts = params.get("options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise UserError("options must be a dict of Ollama model parameters")
        unknown = sorted(set(opts) - OPTIONS)
        if unknown:
            raise UserError(
                f"options do not take {', '.join(map(repr, unknown))}",
                hint=f"Ollama's options: {', '.join(sorted(OPTIONS))}",
            )


def needs(method: str, params: dict[str, Any]) -> frozenset[str]:
    """The model capabilities (as ``/api/show`` names them) a call needs."""
    if method == EMBED:
        return frozenset({"embedding"})
    need = {"completion"}
    if params.get("images") or (
        method == CHAT
        and any(isinstance(m, dict) and m.get("images") for m in params.get("messages") or ())
    ):
        need.add("vision")
    if params.get("think"):
        need.add("thinking")
    if params.get("tools"):
        need.add("tools")
    if params.get("suffix"):
        need.add("insert")
    return frozenset(need)


def check_params(method: str, params: dict[str, Any], default_model: str | None) -> None:
    """Raise UserError for a call Ollama would reject or silently misread."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if method == MODELS:
        return
    allowed = set(FIELDS[method]) | set(CONVENIENCE_OPTIONS) | HUB_PARAMS
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UserError(
            f"{method} does not take {', '.join(map(repr, unknown))}",
            hint=f"known parameters: {', '.join(sorted(allowed - HUB_PARAMS))}",
        )
    model = params.get("model") or default_model
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"{method} needs a model", hint="pass model='llama3.2' (or default_model)")
    if method == GENERATE and not isinstance(params.get("prompt"), str):
        raise UserError("llm/generate needs a prompt (a string)")
    if method == CHAT:
        msgs = params.get("messages")
        if not isinstance(msgs, list):
            raise UserError("llm/chat needs messages: a list of {'role': ..., 'content': ...}")
        for msg in msgs:
            _check_message(msg)
    if method == EMBED:
        inp = params.get("input")
        if not (
            isinstance(inp, str) or (isinstance(inp, list) and all(isinstance(s, str) for s in inp))
        ):
            raise UserError("llm/embed needs input: a string or a list of strings")
    _check_shapes(method, params)


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
) -> httpx.Response:
    """POST and read the whole answer, straight through the client's transport.

    The hot path of a batch: it skips ``AsyncClient.send`` (auth, redirects, cookies, event
    hooks; none used here), which measured about a quarter of httpx's client CPU per call.
    Same pool, same timeouts (``extensions``), same httpx exceptions.
    """
    request = httpx.Request("POST", url, content=body, headers=JSON_HEADERS, extensions=extensions)
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()  # on cancellation too: a half-read answer closes its socket
    return response


async def first_line(
    client: httpx.AsyncClient, request: httpx.Request, timeout: float | None, ident: str
) -> tuple[httpx.Response, AsyncIterator[str], str | None]:
    """Send a streaming request and read up to its first NDJSON line within ``timeout``.
    Returns the line iterator too: a response's lines can be iterated only once."""

    async def go() -> tuple[httpx.Response, AsyncIterator[str], str | None]:
        resp = await client.send(request, stream=True)
        try:
            lines = resp.aiter_lines()
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
    return round(ns / 1e6, 3) if isinstance(ns, (int, float)) else None


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
    eval_ns = data.get("eval_duration")
    tps = None
    if isinstance(eval_count, int) and isinstance(eval_ns, (int, float)) and eval_ns > 0:
        tps = round(eval_count / (eval_ns / 1e9), 2)
    if ttft_ms is None and isinstance(eval_ns, (int, float)):
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
