"""The OpenAI HTTP API as the stand-in speaks it: ``/v1/models``, ``/v1/chat/completions``
(whole or as server-sent events, ``stream_options.include_usage``), ``/v1/embeddings``, the
error object, ``429`` with ``Retry-After``, and an engine's ``/health`` and Prometheus
``/metrics`` (vLLM's gauge names by default)."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._ollama_answer import Pace, answer
from ._ollama_http import HttpRequest, Responder
from ._ollama_model import Faults, RecordedRequest, embedding_vector
from ._sse_answer import SseAnswer

__all__ = ["GAUGES", "OpenAIApi", "OpenAIFaults"]

#: engine -> (running gauge, waiting gauge) as each engine names them on /metrics
GAUGES = {
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
    "sglang": ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
    "llama.cpp": ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
    "tgi": ("tgi_batch_current_size", "tgi_queue_size"),
}


@dataclass
class OpenAIFaults(Faults):
    """The Ollama stand-in's knobs, plus ``rate_limit_rate`` (answer 429 with this
    probability, ``Retry-After: retry_after`` seconds; None: no header) and ``extra_waiting``
    (requests other clients queue there, added to the ``/metrics`` waiting gauge)."""

    rate_limit_rate: float = 0.0
    retry_after: float | None = 1.0
    extra_waiting: int = 0


def _error(message: str, kind: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class OpenAIApi:
    """Endpoint handlers and server state; runs on the stand-in's own event loop."""

    def __init__(
        self,
        *,
        models: list[str],
        latency: float,
        tokens_per_s: float,
        num_parallel: int,
        max_queue: int,
        default_tokens: int,
        embed_dim: int,
        api_key: str | None,
        engine: str | None,
        has_health: bool,
        seed: int,
        record_limit: int = 10_000,
    ) -> None:
        self.models = list(models)
        self.latency = latency
        self.tokens_per_s = tokens_per_s
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.default_tokens = default_tokens
        self.embed_dim = embed_dim
        self.api_key = api_key
        self.engine = engine
        self.has_health = has_health
        self.faults = OpenAIFaults()
        self.rng = random.Random(seed)
        self.requests: deque[RecordedRequest] = deque(maxlen=record_limit)
        self.served: dict[str, int] = {}
        self.active = 0
        self.waiting = 0
        self.peak_active = 0
        self._slots: asyncio.Semaphore | None = None
        self._ids = itertools.count(1)

    # --- dispatch ---------------------------------------------------------------------
    async def handle(self, req: HttpRequest, resp: Responder) -> None:
        try:
            body = req.json() if req.method == "POST" else {}
        except (ValueError, UnicodeDecodeError):
            await resp.send_json(400, _error("invalid JSON body", "invalid_request_error", None))
            return
        self.requests.append(RecordedRequest(req.method, req.path, body))
        route = _ROUTES.get((req.method, req.path))
        # TGI: no /v1/models (older versions), its one model on /info instead
        gone = {"/health"} if not self.has_health else set()
        gone |= {"/v1/models"} if self.engine == "tgi" else {"/info"}
        if route is None or req.path in gone:
            await resp.send_json(404, {"detail": "Not Found"})
            return
        self.served[req.path] = self.served.get(req.path, 0) + 1
        if req.path.startswith("/v1/") and self.api_key is not None:
            if req.headers.get("authorization") != f"Bearer {self.api_key}":
                msg = "Incorrect API key provided"
                await resp.send_json(401, _error(msg, "invalid_request_error", "invalid_api_key"))
                return
        if req.path in ("/v1/chat/completions", "/v1/embeddings"):
            if not isinstance(body, dict):
                msg = "request body must be a JSON object"
                await resp.send_json(400, _error(msg, "invalid_request_error", None))
                return
            if await self._inject_fault(resp):
                return
        await route(self, body, resp)

    async def _rate_limit(self, resp: Responder) -> None:
        if self.faults.retry_after is not None:
            resp.extra_headers.append(("Retry-After", f"{self.faults.retry_after:g}"))
        msg = "Rate limit reached for requests. Please try again later."
        await resp.send_json(429, _error(msg, "requests", "rate_limit_exceeded"))

    async def _inject_fault(self, resp: Responder) -> bool:
        f = self.faults
        if f.reset_rate and self.rng.random() < f.reset_rate:
            resp.reset()
            return True
        if f.rate_limit_rate and self.rng.random() < f.rate_limit_rate:
            await self._rate_limit(resp)
            return True
        if f.busy_rate and self.rng.random() < f.busy_rate:
            msg = "The server is overloaded or not ready yet."
            await resp.send_json(503, _error(msg, "server_error", None))
            return True
        if f.error_rate and self.rng.random() < f.error_rate:
            msg = "The server had an error while processing your request."
            await resp.send_json(f.error_status, _error(msg, "server_error", None))
            return True
        while f.hang:  # noqa: ASYNC110 - a plain attribute flipped from test threads
            await asyncio.sleep(0.02)
        return False

    async def _model(self, body: dict[str, Any], resp: Responder) -> str | None:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            msg = "you must provide a model parameter"
            await resp.send_json(400, _error(msg, "invalid_request_error", None, "model"))
            return None
        if name not in self.models:
            msg = f"The model `{name}` does not exist or you do not have access to it."
            await resp.send_json(404, _error(msg, "invalid_request_error", "model_not_found"))
            return None
        return name

    async def _acquire(self, resp: Responder) -> asyncio.Semaphore | None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.num_parallel)
        slots = self._slots
        if slots.locked() and self.waiting >= self.max_queue:
            await self._rate_limit(resp)  # a full queue: what a gateway in front answers
            return None
        self.waiting += 1
        try:
            await slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        return slots

    # --- endpoints ---------------------------------------------------------------------
    async def chat(self, body: dict[str, Any], resp: Responder) -> None:
        name = await self._model(body, resp)
        if name is None:
            return
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
            msg = "messages must be a non-empty list of objects"
            await resp.send_json(400, _error(msg, "invalid_request_error", None, "messages"))
            return
        slots = await self._acquire(resp)
        if slots is None:
            return
        try:
            await self._complete(name, body, msgs, resp)
        finally:
            self.active -= 1
            slots.release()

    def _ollama_view(self, body: dict[str, Any]) -> tuple[dict, dict]:
        # The shared generator speaks Ollama's names: translate the few it reads.
        options = {k: body[k] for k in ("seed", "stop") if body.get(k) is not None}
        if body.get("max_tokens") is not None:
            options["num_predict"] = body["max_tokens"]
        fmt = body.get("response_format") or {}
        view: dict[str, Any] = {"tools": body.get("tools")}
        if fmt.get("type") == "json_object":
            view["format"] = "json"
        elif fmt.get("type") == "json_schema":
            view["format"] = (fmt.get("json_schema") or {}).get("schema") or {}
        return options, view

    async def _complete(
        self, name: str, body: dict[str, Any], msgs: list[dict], resp: Responder
    ) -> None:
        text = "\n".join(
            c if isinstance(c := m.get("content"), str) else json.dumps(c) for m in msgs
        )
        options, view = self._ollama_view(body)
        tokens, _, calls, reason = answer(name, text, options, view, True, self.default_tokens)
        reason = {"stop": "stop", "length": "length"}.get(reason, "stop")
        tool_calls = [
            {
                "id": f"call_{n}",
                "type": "function",
                "function": {
                    "name": c["function"]["name"],
                    "arguments": json.dumps(c["function"]["arguments"]),
                },
            }
            for n, c in enumerate(calls)
        ]
        if tool_calls:
            reason = "tool_calls"
        usage = {
            "prompt_tokens": max(1, len(text.split())),
            "completion_tokens": len(tokens) or len(tool_calls),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": f"chatcmpl-{next(self._ids)}", "created": int(time.time()), "model": name}
        if self.latency:
            await asyncio.sleep(self.latency)
        pace = Pace(time.perf_counter(), 1.0 / self.tokens_per_s if self.tokens_per_s else 0.0)
        if not body.get("stream"):
            await pace.until(len(tokens))
            message: dict[str, Any] = {"role": "assistant", "content": "".join(tokens) or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
            if self.faults.stream_error_after is not None:
                msg = "The server had an error while processing your request."
                await resp.send_json(500, _error(msg, "server_error", None))
                return
            out = {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            await resp.send_json(200, out)
            return
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        sse = SseAnswer(resp)
        await sse.start()

        async def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            c = {**head, "object": "chat.completion.chunk"}
            c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if with_usage:
                c["usage"] = None
            await sse.event(c)

        await chunk({"role": "assistant", "content": ""})
        err_after = self.faults.stream_error_after
        for i, tok in enumerate(tokens):
            if err_after is not None and i >= err_after:
                msg = "The server had an error while processing your request."
                await sse.event(_error(msg, "server_error", None))
                await sse.end()
                return
            await pace.until(i + 1)
            await chunk({"content": tok})
        if tool_calls:
            await chunk({"tool_calls": [{"index": n, **c} for n, c in enumerate(tool_calls)]})
        await chunk({}, reason)
        if with_usage:
            await sse.event(
                {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        await sse.event("[DONE]")
        await sse.end()

    async def embeddings(self, body: dict[str, Any], resp: Responder) -> None:
        name = await self._model(body, resp)
        if name is None:
            return
        inp = body.get("input")
        inputs = [inp] if isinstance(inp, str) else inp
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            msg = "input must be a string or a list of strings"
            await resp.send_json(400, _error(msg, "invalid_request_error", None, "input"))
            return
        slots = await self._acquire(resp)
        if slots is None:
            return
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            dims = body.get("dimensions")
            size = dims if isinstance(dims, int) and 0 < dims <= self.embed_dim else self.embed_dim
            data = [
                {"object": "embedding", "index": i, "embedding": embedding_vector(name, s, size)}
                for i, s in enumerate(inputs)
            ]
            n = sum(max(1, len(s.split())) for s in inputs)
            usage = {"prompt_tokens": n, "total_tokens": n}
            await resp.send_json(
                200, {"object": "list", "data": data, "model": name, "usage": usage}
            )
        finally:
            self.active -= 1
            slots.release()

    async def list_models(self, body: dict[str, Any], resp: Responder) -> None:
        rows = [
            {
                "id": m,
                "object": "model",
                "created": 1735689600,
                "owned_by": self.engine or "standin",
            }
            for m in self.models
        ]
        await resp.send_json(200, {"object": "list", "data": rows})

    async def info(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(200, {"model_id": self.models[0], "version": "2.0.0"})

    async def health(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(200, {"status": "ok"})

    async def metrics(self, body: dict[str, Any], resp: Responder) -> None:
        if self.engine not in GAUGES:
            await resp.send_json(404, {"detail": "Not Found"})
            return
        running, waiting = GAUGES[self.engine]
        lines = []
        for gauge, value in ((running, self.active), (waiting, self.waiting)):
            if gauge == waiting:
                value += self.faults.extra_waiting
            lines += [
                f"# HELP {gauge} Requests ({'running' if gauge == running else 'waiting'}).",
                f"# TYPE {gauge} gauge",
            ]
            lines += [f'{gauge}{{model_name="{m}"}} {value if i == 0 else 0}.0'
                      for i, m in enumerate(self.models)]  # fmt: skip
        text = "\n".join(lines) + "\n"
        await resp.send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")

    async def control(self, body: dict[str, Any], resp: Responder) -> None:
        """Stand-in only: change knobs of a stand-in running in another process."""
        try:
            self.faults.update(**body.get("faults", {}))
        except AttributeError as exc:
            await resp.send_json(400, {"error": str(exc)})
            return
        for key in ("latency", "tokens_per_s", "default_tokens", "models", "api_key", "engine"):
            if key in body:
                setattr(self, key, body[key])
        await resp.send_json(200, self.stats())

    async def stats_ep(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(200, self.stats())

    def stats(self) -> dict[str, Any]:
        return {
            "served": dict(self.served),
            "active": self.active,
            "waiting": self.waiting,
            "peak_active": self.peak_active,
            "models": self.models,
            "faults": vars(self.faults),
        }


_ROUTES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/chat/completions"): OpenAIApi.chat,
    ("POST", "/v1/embeddings"): OpenAIApi.embeddings,
    ("GET", "/v1/models"): OpenAIApi.list_models,
    ("GET", "/health"): OpenAIApi.health,
    ("GET", "/info"): OpenAIApi.info,
    ("GET", "/metrics"): OpenAIApi.metrics,
    ("POST", "/_standin/control"): OpenAIApi.control,
    ("GET", "/_standin/stats"): OpenAIApi.stats_ep,
}
