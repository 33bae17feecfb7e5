"""Translation between gleitzeit results and the OpenAI HTTP API's answers: result shapes
(the Ollama provider's, so magics and panels read either), streamed chunks assembled into
one answer, error bodies and statuses, ``Retry-After``, and queue gauges from ``/metrics``.

Wire format: the OpenAI API reference (chat completion object, chat completion chunk with
``stream_options.include_usage``: a last chunk with empty ``choices`` and the ``usage``;
the error object ``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import json
import math
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ..hub import ExecutionTimeout, HubError, ResourceFailed, UserError
from ..hub.fleet import figure
from ._openai_fields import CHAT, EMBED

__all__ = [
    "Assembly",
    "ChatCompletionError",
    "error_code",
    "error_message",
    "error_status",
    "http_error",
    "not_an_answer",
    "queue_depth",
    "retry_after",
    "shape_result",
    "stream_error",
    "transport_error",
]


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) in Ollama's shape (a dict)."""
    out = []
    for call in calls or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                pass  # kept as sent: the model wrote something that is not JSON
        out.append({"id": call.get("id"), "function": {"name": fn.get("name"), "arguments": args}})
    return out


def _thinking(msg: dict[str, Any]) -> str:
    # vLLM and SGLang name it reasoning_content; newer vLLM and LM Studio, reasoning.
    return str(msg.get("reasoning_content") or msg.get("reasoning") or "")


class ChatCompletionError(ValueError):
    """A 200 answer that is not what the endpoint returns (no ``choices``, not an object)."""


def _checked(method: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ChatCompletionError(f"a JSON {type(data).__name__}, not an object")
    if method == EMBED:
        if not isinstance(data.get("data"), list):
            raise ChatCompletionError("no 'data' list")
        return data
    choices = data.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        raise ChatCompletionError("no 'choices'")
    return data


def shape_result(
    method: str,
    data: dict[str, Any],
    latency_ms: float,
    ttft_ms: float | None,
    instance: str,
) -> dict[str, Any]:
    """A complete OpenAI answer as a gleitzeit result (the Ollama provider's field names).
    Raises ChatCompletionError for an answer that is not one."""
    data = _checked(method, data)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt = figure(usage.get("prompt_tokens"))
    completion = figure(usage.get("completion_tokens"))
    out: dict[str, Any] = {}
    reason = None
    if method == EMBED:
        rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        out["embeddings"] = [d.get("embedding") for d in rows]
    else:
        choice = data["choices"][0]
        msg = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        reason = choice.get("finish_reason")
        message: dict[str, Any] = {"role": "assistant", "content": msg.get("content") or ""}
        if _thinking(msg):
            message["thinking"] = _thinking(msg)
        if msg.get("tool_calls"):
            message["tool_calls"] = _tool_calls(msg["tool_calls"])
        if method == CHAT:
            out["message"] = message
        out["response"] = message["content"]
        for key in ("thinking", "tool_calls"):
            if key in message:
                out[key] = message[key]
        if choice.get("logprobs") is not None:
            out["logprobs"] = choice["logprobs"]
    # Generation time: from the first token when it was seen, else the whole call.
    gen_ms = latency_ms - (ttft_ms or 0.0)
    tps = None
    if completion and gen_ms > 0:
        tps = completion / (gen_ms / 1000.0)
        tps = round(tps, 2) if math.isfinite(tps) else None
    out.update(
        model=data.get("model"),
        instance=instance,
        latency_ms=round(latency_ms, 3),
        time_to_first_token_ms=None if ttft_ms is None else round(ttft_ms, 3),
        prompt_tokens=None if prompt is None else int(prompt),
        completion_tokens=None if completion is None else int(completion),
        tokens_per_s=tps,
        load_ms=None,
        total_ms=round(latency_ms, 3),
        done_reason=reason,
        # Ollama's names too, so code written against the Ollama pool reads these results
        prompt_eval_count=None if prompt is None else int(prompt),
        eval_count=None if completion is None else int(completion),
        # Only when measured from the first token: a footer would otherwise show the first
        # token at 0 ms for an answer that arrived whole.
        eval_duration=int(gen_ms * 1e6) if ttft_ms is not None else None,
        id=data.get("id"),
    )
    return out


class Assembly:
    """The chunks of one streamed answer, put back together into a complete answer."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.id: str | None = None

    def add(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """Take one chunk; returns the gleitzeit chunk to yield (None: nothing new to show)."""
        self.model = data.get("model") or self.model
        self.id = data.get("id") or self.id
        if data.get("usage"):
            self.usage = data["usage"]
        choices = data.get("choices") or []
        if not choices:
            return None
        choice = choices[0] if isinstance(choices, list) else None
        if not isinstance(choice, dict) or not isinstance(choice.get("delta") or {}, dict):
            raise ChatCompletionError("not a chat completion chunk")
        delta = choice.get("delta") or {}
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        for call in delta.get("tool_calls") or []:
            slot = self.calls.setdefault(
                int(call.get("index", len(self.calls))),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            slot["id"] = call.get("id") or slot["id"]
            fn = call.get("function") or {}
            slot["function"]["name"] += fn.get("name") or ""
            slot["function"]["arguments"] += fn.get("arguments") or ""
        text, thought = delta.get("content") or "", _thinking(delta)
        self.content.append(text)
        self.thinking.append(thought)
        if not text and not thought:
            return None
        out: dict[str, Any] = {"response": text}
        if self.method == CHAT:
            out["message"] = {"role": "assistant", "content": text}
        if thought:
            out["thinking"] = thought
            if self.method == CHAT:
                out["message"]["thinking"] = thought
        out["model"] = self.model
        out["done"] = False
        return out

    def complete(self) -> dict[str, Any]:
        """The whole answer as a non-streamed chat completion would have been."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if any(self.thinking):
            message["reasoning_content"] = "".join(self.thinking)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return {
            "id": self.id,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }


_TAG = re.compile(r"<[^>]*>")


def _error_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    err = data.get("error", data)
    if isinstance(err, str):  # TGI, some proxies: {"error": "text"}
        return {"message": err, "type": data.get("error_type")}
    return err if isinstance(err, dict) else {}


def error_message(text: str) -> str:
    err = _error_object(text)
    msg = err.get("message") or err.get("detail")
    if msg:
        return " ".join(str(msg).split())
    # A proxy's HTML page: its text, on one line, without the markup.
    plain = " ".join(_TAG.sub(" ", text).split())
    return plain[:200] or "(empty body)"


def error_code(text: str) -> str:
    err = _error_object(text)
    return str(err.get("code") or err.get("type") or "")


def error_status(text: str) -> int | None:
    """The HTTP status an error body names in its ``code`` (llama.cpp's), if any."""
    code = _error_object(text).get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def http_error(status: int, text: str, instance: str, model: str, key_setting: str) -> HubError:
    """An error status as a gleitzeit error: 4xx the caller's, 408 and 5xx the server's."""
    msg = error_message(text)
    if status in (401, 403):
        return UserError(
            f"{instance} refused the API key ({status}): {msg}",
            instance=instance,
            hint=f"set the key for that server ({key_setting})",
        )
    if status == 404 or error_code(text) == "model_not_found":
        return UserError(
            f"model '{model}' not found on {instance}: {msg}",
            instance=instance,
            hint="see %llm models for the models each server serves",
        )
    if status == 408 or status >= 500:
        return ResourceFailed(f"{instance} answered {status}: {msg}", instance=instance)
    return UserError(f"{instance} rejected the call ({status}): {msg}", instance=instance)


def retry_after(headers: httpx.Headers, default: float, cap: float) -> float:
    """Seconds a 429 asks to wait: ``retry-after-ms`` (OpenAI), ``Retry-After`` in seconds or
    as an HTTP date (RFC 9110); ``default`` when absent or unreadable; at most ``cap``."""
    wait: float | None = None
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if raw_ms is not None:
            wait = float(raw_ms) / 1000.0
        elif raw is not None:
            try:
                wait = float(raw)
            except ValueError:
                wait = parsedate_to_datetime(raw).timestamp() - time.time()
    except (ValueError, TypeError, OverflowError):
        wait = None
    if wait is None or not math.isfinite(wait):
        wait = default
    return min(max(wait, 0.0), cap)


#: Queue gauges of the engines that export them: (running, waiting) metric names.
QUEUE_GAUGES = {
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
    "llama.cpp": ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
    "tgi": ("tgi_batch_current_size", "tgi_queue_size"),
}
_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?$"
)


def queue_depth(text: str) -> tuple[str, float, float] | None:
    """(engine, running, waiting) from Prometheus text, summed over label sets (one per
    model); None when no engine's pair of gauges is there. A line naming one of the
    gauges that does not parse makes the whole answer unreadable (ValueError)."""
    wanted = {n for pair in QUEUE_GAUGES.values() for n in pair}
    seen: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(None, 1)[0]
        if name not in wanted:
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"unreadable metrics line: {line[:80]}")
        value = float(m["value"])
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"metric {name} is {m['value']}")
        seen[name] = seen.get(name, 0.0) + value
    for engine, (running, waiting) in QUEUE_GAUGES.items():
        if running in seen and waiting in seen:
            if not math.isfinite(seen[running] + seen[waiting]):
                raise ValueError(f"{engine} queue gauges add up to no number")
            return engine, seen[running], seen[waiting]
    return None


def transport_error(exc: httpx.HTTPError, instance: str, url: str, timeout: float) -> HubError:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        # No connection, so no request: it provably never reached the server.
        return ResourceFailed(
            f"cannot connect to {url}",
            instance=instance,
            hint="is the server running there?",
            started=False,
        )
    if isinstance(exc, httpx.ReadTimeout):
        return ExecutionTimeout(f"{url} sent nothing for {timeout:g} s", instance=instance)
    if isinstance(exc, httpx.PoolTimeout):
        return ResourceFailed(f"all connections to {url} stayed busy", instance=instance)
    detail = str(exc) or type(exc).__name__
    return ResourceFailed(f"connection to {url} failed: {detail}", instance=instance)


def not_an_answer(ident: str, method: str, exc: Exception) -> ResourceFailed:
    what = "an embeddings list" if method == EMBED else "a chat completion"
    return ResourceFailed(f"{ident} answered 200 with {exc}: not {what}", instance=ident)


def stream_error(ident: str, text: str, model: str, key_setting: str) -> HubError:
    """An error sent inside a stream; one with a 4xx code (llama.cpp's prompt longer than
    the context) is the caller's, like the same status before the stream."""
    code = error_status(text)
    if code is not None and 400 <= code < 500 and code not in (408, 429):
        return http_error(code, text, ident, model, key_setting)
    return ResourceFailed(f"{ident} failed mid-stream: {error_message(text)}", instance=ident)
