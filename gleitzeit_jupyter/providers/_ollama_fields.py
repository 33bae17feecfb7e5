"""The calls Ollama takes: its documented request fields, where each goes, and the checks
that turn a call Ollama would reject or silently misread into a UserError naming the field.

Fields follow Ollama's request types (its api/types.go; the official client's
GenerateRequest, ChatRequest, EmbedRequest, Message and Options).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

from ..hub import UserError

__all__ = [
    "CHAT",
    "CONVENIENCE_OPTIONS",
    "EMBED",
    "FIELDS",
    "GENERATE",
    "HUB_PARAMS",
    "METHODS",
    "MODELS",
    "MODEL_METHODS",
    "OPTIONS",
    "PATHS",
    "check_params",
    "needs",
    "normalize_model",
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


_INT64 = range(-(2**63), 2**63)


def _check_token_limit(value: Any, name: str) -> None:
    # Ollama reads num_predict into a Go int: true or a number beyond 64 bits is refused
    # there, and such a value must not reach the cost estimate (a float) either.
    if value is None or (isinstance(value, float) and math.isfinite(value)):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT64:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        raise UserError(
            f"{name} must be a whole number of tokens (-1: no limit)", hint=f"got {shown}"
        )


def _check_shapes(method: str, params: dict[str, Any]) -> None:
    """The documented types of the fields whose shape decides where a call can go."""
    for name in ("max_tokens", "num_predict"):
        _check_token_limit(params.get(name), name)
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
        _check_token_limit(opts.get("num_predict"), "options.num_predict")


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
    # No prompt is Ollama's documented way to load a model (with keep_alive 0: to unload it).
    if method == GENERATE and not isinstance(params.get("prompt") or "", str):
        raise UserError("llm/generate's prompt must be a string")
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
