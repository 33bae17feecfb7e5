"""Ollama's HTTP API as the stand-in speaks it: endpoints, field names, errors, timing.

Wire format follows Ollama's docs/api.md and server code: NDJSON streaming with
``application/x-ndjson``; a final ``done: true`` object carrying ``done_reason``,
``total_duration``, ``load_duration``, ``prompt_eval_count``, ``prompt_eval_duration``,
``eval_count``, ``eval_duration`` (all durations in nanoseconds); errors as ``{"error": "..."}``
with 400 (bad request), 404 (``model "x" not found, try pulling it first``) and 503 (``server
busy, please try again.  maximum pending requests exceeded``). ``stream`` defaults to true.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

from ._ollama_answer import Pace, answer, refusal
from ._ollama_catalog import CatalogEndpoints
from ._ollama_control import ControlEndpoints
from ._ollama_http import HttpRequest, Responder
from ._ollama_memory import ModelMemory
from ._ollama_model import (
    Faults,
    RecordedRequest,
    default_capabilities,
    embedding_vector,
    normalize_model,
    now_iso,
)

__all__ = ["ERR_BUSY", "INFERENCE_PATHS", "OllamaApi"]

ERR_BUSY = "server busy, please try again.  maximum pending requests exceeded"
INFERENCE_PATHS = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings")


class OllamaApi(CatalogEndpoints, ControlEndpoints):
    """Endpoint handlers and model state. Runs on the stand-in's own event loop."""

    def __init__(
        self,
        *,
        models: list[str],
        loaded: list[str],
        latency: float,
        tokens_per_s: float,
        num_parallel: int,
        max_queue: int,
        load_time: float,
        default_tokens: int,
        embed_dim: int,
        version: str,
        seed: int,
        capabilities: dict[str, list[str]] | None = None,
        max_loaded: int | None = None,
        record_limit: int = 10_000,
    ) -> None:
        self.models = [normalize_model(m) for m in models]
        self.memory = ModelMemory([normalize_model(m) for m in loaded], max_loaded, load_time)
        self.capabilities = {normalize_model(k): list(v) for k, v in (capabilities or {}).items()}
        self.latency = latency
        self.tokens_per_s = tokens_per_s
        self._slots: asyncio.Semaphore | None = None
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.default_tokens = default_tokens
        self.embed_dim = embed_dim
        self.version = version
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.requests: deque[RecordedRequest] = deque(maxlen=record_limit)
        self.served: dict[str, int] = {}
        self.active = 0  # calls holding a parallel slot
        self.waiting = 0  # calls queued for a slot
        self.peak_active = 0

    @property
    def loaded(self) -> set[str]:
        return self.memory.loaded

    @loaded.setter
    def loaded(self, names: set[str]) -> None:
        self.memory.loaded = names

    @property
    def load_time(self) -> float:
        return self.memory.load_time

    @load_time.setter
    def load_time(self, seconds: float) -> None:
        self.memory.load_time = seconds

    @property
    def max_loaded(self) -> int | None:
        return self.memory.max_loaded

    @max_loaded.setter
    def max_loaded(self, n: int | None) -> None:
        self.memory.max_loaded = n

    def capabilities_of(self, model: str) -> list[str]:
        return self.capabilities.get(model) or default_capabilities(model)

    @property
    def num_parallel(self) -> int:
        return self._num_parallel

    @num_parallel.setter
    def num_parallel(self, n: int) -> None:
        # A new semaphore on next use; calls holding a slot of the old one finish on it.
        self._num_parallel = n
        self._slots = None

    # --- dispatch ---------------------------------------------------------------------
    async def handle(self, req: HttpRequest, resp: Responder) -> None:
        try:
            body = req.json() if req.method == "POST" else {}
        except (ValueError, UnicodeDecodeError):
            await resp.send_json(400, {"error": "invalid character in request body"})
            return
        self.requests.append(RecordedRequest(req.method, req.path, body))
        route = _ROUTES.get((req.method, req.path))
        if route is None:
            if req.path in {p for _, p in _ROUTES}:
                await resp.send(405, b"405 method not allowed", "text/plain")
            else:
                await resp.send(404, b"404 page not found", "text/plain")
            return
        self.served[req.path] = self.served.get(req.path, 0) + 1
        if not isinstance(body, dict):
            await resp.send_json(400, {"error": "request body must be a JSON object"})
            return
        if req.path in INFERENCE_PATHS and await self._inject_fault(resp):
            return
        await route(self, body, resp)

    async def _inject_fault(self, resp: Responder) -> bool:
        f = self.faults
        if f.reset_rate and self.rng.random() < f.reset_rate:
            resp.reset()
            return True
        if f.busy_rate and self.rng.random() < f.busy_rate:
            await resp.send_json(503, {"error": ERR_BUSY})
            return True
        if f.error_rate and self.rng.random() < f.error_rate:
            await resp.send_json(f.error_status, {"error": "llama runner process has terminated"})
            return True
        # Poll: the knob is a plain attribute flipped from test threads, not an asyncio.Event.
        while f.hang:  # noqa: ASYNC110 - until cleared or the client gives up
            await asyncio.sleep(0.02)
        return False

    # --- model state -----------------------------------------------------------------
    def check_model(self, body: dict[str, Any]) -> tuple[str | None, tuple[int, str] | None]:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return None, (400, "model is required")
        full = normalize_model(name)
        if full not in self.models:
            return None, (404, f'model "{name}" not found, try pulling it first')
        return full, None

    async def _acquire(self, resp: Responder) -> asyncio.Semaphore | None:
        """Wait for a parallel slot; None (after a 503) when the queue is full."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._num_parallel)
        slots = self._slots
        if slots.locked() and self.waiting >= self.max_queue:
            await resp.send_json(503, {"error": ERR_BUSY})
            return None
        self.waiting += 1
        try:
            await slots.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        return slots

    def _release(self, slots: asyncio.Semaphore) -> None:
        self.active -= 1
        slots.release()

    def _refuse(self, model: str, name: str, body: dict[str, Any], chat: bool) -> str | None:
        return refusal(self.capabilities_of(model), name, body, chat)

    # --- generation ------------------------------------------------------------------
    async def _generate_like(self, body: dict[str, Any], resp: Responder, chat: bool) -> None:
        model, err = self.check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        options = body.get("options") or {}
        if not isinstance(options, dict):
            await resp.send_json(400, {"error": "options must be an object"})
            return
        if chat:
            msgs = body.get("messages") or []
            if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
                await resp.send_json(400, {"error": "messages must be a list of objects"})
                return
            text = "\n".join(str(m.get("content", "")) for m in msgs)
            empty = not msgs
        else:
            text = f"{body.get('system', '')}\n{body.get('prompt', '')}"
            empty = not body.get("prompt") and not body.get("images")
        stream = body.get("stream", True) is not False
        name = body["model"]
        refused = None if empty else self._refuse(model, name, body, chat)
        if refused:
            await resp.send_json(400, {"error": refused})
            return
        t0 = time.perf_counter()
        slots = await self._acquire(resp)
        if slots is None:
            return
        load_ns = None
        try:
            load_ns = await self.memory.acquire(model)
            if empty:
                # Ollama loads (or, with keep_alive 0, unloads) the model and answers at once.
                reason = "load"
                if body.get("keep_alive") in (0, "0", "0s"):
                    self.memory.release(model)
                    load_ns = None
                    self.memory.unload(model)
                    reason = "unload"
                final = {
                    "model": name,
                    "created_at": now_iso(),
                    "done": True,
                    "done_reason": reason,
                }
                final.update(
                    {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
                )
                await resp.send_json(200, final)
                return
            await self._run(name, model, text, options, body, resp, chat, stream, t0, load_ns)
        finally:
            if load_ns is not None:
                self.memory.release(model)
            self._release(slots)

    async def _run(
        self,
        name: str,
        model: str,
        text: str,
        options: dict[str, Any],
        body: dict[str, Any],
        resp: Responder,
        chat: bool,
        stream: bool,
        t0: float,
        load_ns: int,
    ) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        t_eval = time.perf_counter()
        prompt_eval_ns = max(int(self.latency * 1e9), 100_000)
        tokens, thoughts, calls, reason = answer(
            model, text, options, body, chat, self.default_tokens, self.faults
        )
        per_tok = 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        err_after = self.faults.stream_error_after
        if stream:
            await resp.start_stream()
        # Tokens are due on a fixed schedule from t_eval, not one sleep after another: on a
        # busy machine each short sleep overshoots, and the overshoots would add up to a
        # server slower than its tokens_per_s. An answer sent whole sleeps once.
        pace = Pace(t_eval, per_tok)
        for j, tok in enumerate(thoughts):
            if stream:
                await pace.until(j + 1)
                await resp.stream_line(self._chunk(name, "", chat, done=False, thinking=tok))
        for i, tok in enumerate(tokens):
            if err_after is not None and i >= err_after:
                await pace.until(len(thoughts) + i)
                await self._fail_mid(resp, stream)
                return
            if stream:
                await pace.until(len(thoughts) + i + 1)
                await resp.stream_line(self._chunk(name, tok, chat, done=False))
        await pace.until(len(thoughts) + len(tokens))
        n_eval = len(tokens) + len(thoughts)
        eval_ns = max(int((time.perf_counter() - t_eval) * 1e9), 1_000 * max(n_eval, 1))
        final = self._chunk(
            name,
            "" if stream else "".join(tokens),
            chat,
            done=True,
            thinking="" if stream else "".join(thoughts),
        )
        if calls:
            # Ollama sends tool calls whole, in one message, whether streaming or not.
            final["message"]["tool_calls"] = calls
        final.update(
            done_reason=reason,
            total_duration=int((time.perf_counter() - t0) * 1e9),
            load_duration=load_ns,
            prompt_eval_count=max(1, len(text.split())),
            prompt_eval_duration=prompt_eval_ns,
            eval_count=n_eval,
            eval_duration=eval_ns,
        )
        if not chat:
            final["context"] = [1, 2, 3]
        if stream:
            await resp.stream_line(final)
            await resp.end_stream()
        else:
            await resp.send_json(200, final)

    async def _fail_mid(self, resp: Responder, stream: bool) -> None:
        msg = "an error was encountered while running the model: unexpected EOF"
        if stream:
            # Ollama keeps the 200 status it already sent and reports the failure in-band.
            await resp.stream_line({"error": msg})
            await resp.end_stream()
        else:
            await resp.send_json(500, {"error": msg})

    @staticmethod
    def _chunk(name: str, tok: str, chat: bool, done: bool, thinking: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"model": name, "created_at": now_iso()}
        if chat:
            out["message"] = {"role": "assistant", "content": tok}
            if thinking:
                out["message"]["thinking"] = thinking
        else:
            out["response"] = tok
            if thinking:
                out["thinking"] = thinking
        out["done"] = done
        return out

    # --- endpoints -------------------------------------------------------------------
    async def generate(self, body: dict[str, Any], resp: Responder) -> None:
        await self._generate_like(body, resp, chat=False)

    async def chat(self, body: dict[str, Any], resp: Responder) -> None:
        await self._generate_like(body, resp, chat=True)

    async def embed(self, body: dict[str, Any], resp: Responder) -> None:
        model, err = self.check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        if "embedding" not in self.capabilities_of(model):
            await resp.send_json(400, {"error": f'"{body["model"]}" does not support embeddings'})
            return
        inp = body.get("input", [])
        inputs = [inp] if isinstance(inp, str) else inp
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            await resp.send_json(400, {"error": "invalid input type"})
            return
        t0 = time.perf_counter()
        slots = await self._acquire(resp)
        if slots is None:
            return
        load_ns = await self.memory.acquire(model)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            dims = body.get("dimensions")
            size = dims if isinstance(dims, int) and 0 < dims <= self.embed_dim else self.embed_dim
            await resp.send_json(
                200,
                {
                    "model": body["model"],
                    "embeddings": [embedding_vector(model, s, size) for s in inputs],
                    "total_duration": int((time.perf_counter() - t0) * 1e9),
                    "load_duration": load_ns,
                    "prompt_eval_count": sum(max(1, len(s.split())) for s in inputs),
                },
            )
        finally:
            self.memory.release(model)
            self._release(slots)

    async def embeddings(self, body: dict[str, Any], resp: Responder) -> None:
        model, err = self.check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        vec = embedding_vector(model, str(body.get("prompt", "")), self.embed_dim)
        await resp.send_json(200, {"embedding": vec})


_ROUTES: dict[tuple[str, str], Any] = {
    ("POST", "/api/generate"): OllamaApi.generate,
    ("POST", "/api/chat"): OllamaApi.chat,
    ("POST", "/api/embed"): OllamaApi.embed,
    ("POST", "/api/embeddings"): OllamaApi.embeddings,
    ("POST", "/api/show"): OllamaApi.show,
    ("GET", "/api/tags"): OllamaApi.tags,
    ("GET", "/api/ps"): OllamaApi.ps,
    ("GET", "/api/version"): OllamaApi.version_ep,
    ("GET", "/"): OllamaApi.root,
    ("POST", "/_standin/control"): OllamaApi.control,
    ("GET", "/_standin/stats"): OllamaApi.stats_ep,
}
