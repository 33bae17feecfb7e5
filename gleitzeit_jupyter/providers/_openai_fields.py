"""The calls an OpenAI-compatible server takes, as gleitzeit calls: which parameters are
accepted, and the request body each becomes.

The parameters are the Ollama provider's (``llm/generate``, ``llm/chat``, ``llm/embed`` with
``model``, ``prompt``/``system``/``messages``, ``options``, ``format``, ``tools``, ``images``),
so one ``%%llm`` call goes to either pool; each maps to the OpenAI API reference's names
(``POST /v1/chat/completions``, ``/v1/embeddings``). OpenAI's own names (``max_tokens``,
``response_format``, ``tool_choice``, ...) are accepted as well.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..hub import UserError
from ._ollama_fields import CHAT, EMBED, GENERATE, HUB_PARAMS, METHODS, MODEL_METHODS, MODELS

__all__ = [
    "CHAT",
    "EMBED",
    "GENERATE",
    "METHODS",
    "MODELS",
    "MODEL_METHODS",
    "PATHS",
    "build_body",
    "check_params",
    "encode",
    "token_limit",
]

PATHS = {GENERATE: "/chat/completions", CHAT: "/chat/completions", EMBED: "/embeddings"}

#: gleitzeit / Ollama option name -> OpenAI request field.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "stop": "stop",
    "num_predict": "max_tokens",
    "max_tokens": "max_tokens",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
#: OpenAI chat fields passed through as they are.
_PASSED = ("tool_choice", "logprobs", "top_logprobs", "user", "n", "logit_bias")
_COMMON = {"model", "options", "format", "response_format", "stream", *_OPTIONS, *_PASSED}
ACCEPTED = {
    GENERATE: _COMMON | {"prompt", "system", "images"},
    CHAT: _COMMON | {"messages", "tools"},
    EMBED: {"model", "input", "dimensions", "encoding_format", "user"},
}
_MESSAGE_FIELDS = {"role", "content", "images", "tool_calls", "tool_name", "tool_call_id", "name"}


def check_params(method: str, params: dict[str, Any], default_model: str | None) -> None:
    """Raise UserError for a call an OpenAI-compatible server would reject or misread."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if method == MODELS:
        return
    unknown = sorted(set(params) - ACCEPTED[method] - HUB_PARAMS)
    if unknown:
        hint = f"known parameters: {', '.join(sorted(ACCEPTED[method]))}"
        if "think" in unknown or "keep_alive" in unknown:
            hint = "think and keep_alive are Ollama's; use an Ollama model (-m ollama:MODEL)"
        raise UserError(
            f"{method} on an OpenAI-compatible server does not take"
            f" {', '.join(map(repr, unknown))}",
            hint=hint,
        )
    model = params.get("model") or default_model
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"{method} needs a model", hint="pass model='Qwen/Qwen2.5-7B-Instruct'")
    opts = params.get("options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise UserError("options must be a dict")
        bad = sorted(set(opts) - set(_OPTIONS))
        if bad:
            raise UserError(
                f"options {', '.join(map(repr, bad))} have no OpenAI equivalent",
                hint=f"OpenAI-compatible servers take: {', '.join(sorted(_OPTIONS))}",
            )
    if method == GENERATE and not (isinstance(params.get("prompt"), str) and params["prompt"]):
        raise UserError("llm/generate needs a prompt (a non-empty string)")
    if method == CHAT:
        msgs = params.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise UserError("llm/chat needs messages: a list of {'role': ..., 'content': ...}")
        for msg in msgs:
            if not isinstance(msg, dict) or "role" not in msg:
                raise UserError("each chat message must be a dict with a 'role'")
            extra = sorted(set(msg) - _MESSAGE_FIELDS)
            if extra:
                raise UserError(f"a chat message does not take {', '.join(map(repr, extra))}")
    if method == EMBED:
        inp = params.get("input")
        if not (
            isinstance(inp, str) or (isinstance(inp, list) and all(isinstance(s, str) for s in inp))
        ):
            raise UserError("llm/embed needs input: a string or a list of strings")
    fmt = params.get("format")
    if fmt not in (None, "", "json") and not isinstance(fmt, dict):
        raise UserError("format must be 'json' or a JSON schema (a dict)")
    tools = params.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise UserError("tools must be a list of {'type': 'function', 'function': {...}}")
    limit = token_limit(params)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise UserError("max_tokens must be a whole number of tokens")


def token_limit(params: dict[str, Any]) -> Any:
    """The call's token limit, wherever it was given (None: none)."""
    opts = params.get("options") if isinstance(params.get("options"), dict) else {}
    for value in (params.get("max_tokens"), params.get("num_predict"), opts.get("num_predict")):
        if value is not None:
            return value
    return opts.get("max_tokens")


def _image_url(data: str) -> dict[str, Any]:
    # Ollama takes bare base64; OpenAI a data: URL whose type the server checks.
    try:
        head = base64.b64decode(data[:24] + "=" * (-len(data[:24]) % 4), validate=False)
    except (binascii.Error, ValueError):
        head = b""
    mime = "image/png"
    if head.startswith(b"\xff\xd8"):
        mime = "image/jpeg"
    elif head.startswith(b"GIF8"):
        mime = "image/gif"
    elif head[8:12] == b"WEBP":
        mime = "image/webp"
    url = data if data.startswith("data:") else f"data:{mime};base64,{data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _arguments(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _message(msg: dict[str, Any], index: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg["role"]}
    content = msg.get("content", "")
    if msg.get("images"):
        parts = [{"type": "text", "text": content}] if content else []
        out["content"] = parts + [_image_url(i) for i in msg["images"]]
    else:
        out["content"] = content
    if msg.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": c.get("id") or f"call_{index}_{n}",
                "type": "function",
                "function": {
                    "name": (c.get("function") or {}).get("name"),
                    "arguments": _arguments((c.get("function") or {}).get("arguments", {})),
                },
            }
            for n, c in enumerate(msg["tool_calls"])
        ]
    if msg["role"] == "tool":
        out["tool_call_id"] = msg.get("tool_call_id") or msg.get("tool_name") or ""
    if msg.get("name"):
        out["name"] = msg["name"]
    return out


def _messages(method: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    if method == CHAT:
        return [_message(m, i) for i, m in enumerate(params["messages"])]
    msgs: list[dict[str, Any]] = []
    if params.get("system"):
        msgs.append({"role": "system", "content": params["system"]})
    user = {"role": "user", "content": params["prompt"], "images": params.get("images")}
    msgs.append(_message(user, 0))
    return msgs


def _response_format(params: dict[str, Any]) -> dict[str, Any] | None:
    if params.get("response_format") is not None:
        return dict(params["response_format"])
    fmt = params.get("format")
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        name = str(fmt.get("title") or "output").replace(" ", "_")[:64]
        return {"type": "json_schema", "json_schema": {"name": name, "schema": fmt}}
    return None


def build_body(
    method: str, params: dict[str, Any], default_model: str | None, stream: bool
) -> tuple[str, dict[str, Any], str]:
    """Return (path below the base URL, JSON body, model) for one call."""
    asked = params.get("stream")
    if asked is not None and asked is not stream:
        use = "stream()" if asked else "execute()"
        raise UserError(f"stream={asked!r} asks for {use}; this call was made with the other")
    model = str(params.get("model") or default_model).strip()
    if method == EMBED:
        body = {k: params[k] for k in ACCEPTED[EMBED] if k in params}
        body["model"] = model
        return PATHS[method], body, model
    body = {"model": model, "messages": _messages(method, params)}
    for source in (params.get("options") or {}, params):
        for key, target in _OPTIONS.items():
            if source.get(key) is not None:
                body[target] = source[key]
    for key in _PASSED:
        if params.get(key) is not None:
            body[key] = params[key]
    if params.get("tools"):
        body["tools"] = params["tools"]
    fmt = _response_format(params)
    if fmt is not None:
        body["response_format"] = fmt
    if isinstance(body.get("max_tokens"), int) and body["max_tokens"] < 0:
        del body["max_tokens"]  # Ollama's -1, "no limit": OpenAI's is to leave it out
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return PATHS[method], body, model


def _plain(value: Any) -> Any:
    """JSON for numbers and arrays in disguise (numpy values out of a DataFrame row), duck
    typed so numpy need not be importable."""
    for name in ("tolist", "item"):
        convert = getattr(value, name, None)
        if callable(convert):
            return convert()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# allow_nan=False: JSON has no NaN or Infinity, and the servers reject a body holding them
_encoder = json.JSONEncoder(
    default=_plain, ensure_ascii=False, separators=(",", ":"), allow_nan=False
)


def encode(body: dict[str, Any]) -> bytes:
    """The request body as JSON bytes; a value that cannot be sent is a UserError."""
    try:
        return _encoder.encode(body).encode()
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"the request cannot be sent as JSON: {exc}",
            hint="pass strings, numbers, lists and dicts (numpy values are converted)",
        ) from None
