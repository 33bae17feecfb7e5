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
import json
import random
import time
from collections import deque
from typing import Any

from ._ollama_http import HttpRequest, Responder
from ._ollama_model import (
    Faults,
    RecordedRequest,
    details,
    digest,
    embedding_vector,
    generate_tokens,
    normalize_model,
    now_iso,
)

__all__ = ["ERR_BUSY", "INFERENCE_PATHS", "OllamaApi"]

ERR_BUSY = "server busy, please try again.  maximum pending requests exceeded"
INFERENCE_PATHS = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings")


class OllamaApi:
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
        record_limit: int = 10_000,
    ) -> None:
        self.models = [normalize_model(m) for m in models]
        self.loaded = {normalize_model(m) for m in loaded}
        self.latency = latency
        self.tokens_per_s = tokens_per_s
        self._slots: asyncio.Semaphore | None = None
        self.num_parallel = num_parallel
        self.max_queue = max_queue
        self.load_time = load_time
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
    def _check_model(self, body: dict[str, Any]) -> tuple[str | None, tuple[int, str] | None]:
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

    async def _load(self, model: str) -> int:
        """Load the model if cold; return load_duration in ns."""
        if model in self.loaded:
            return 150_000  # a warm model still reports a small load_duration
        if self.load_time:
            await asyncio.sleep(self.load_time)
        self.loaded.add(model)
        return int(self.load_time * 1e9) or 150_000

    # --- generation ------------------------------------------------------------------
    async def _generate_like(self, body: dict[str, Any], resp: Responder, chat: bool) -> None:
        model, err = self._check_model(body)
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
        t0 = time.perf_counter()
        slots = await self._acquire(resp)
        if slots is None:
            return
        try:
            load_ns = await self._load(model)
            if empty:
                # Ollama loads (or, with keep_alive 0, unloads) the model and answers at once.
                reason = "load"
                if body.get("keep_alive") in (0, "0", "0s"):
                    self.loaded.discard(model)
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
        tokens, reason = generate_tokens(model, text, options, self.default_tokens)
        if body.get("format") is not None and tokens:
            tokens = [json.dumps({"response": "".join(tokens).strip()})]
        per_tok = 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        err_after = self.faults.stream_error_after
        if stream:
            await resp.start_stream()
        for i, tok in enumerate(tokens):
            if err_after is not None and i >= err_after:
                await self._fail_mid(resp, stream)
                return
            if per_tok:
                await asyncio.sleep(per_tok)
            if stream:
                await resp.stream_line(self._chunk(name, tok, chat, done=False))
        eval_ns = max(int((time.perf_counter() - t_eval) * 1e9), 1_000 * max(len(tokens), 1))
        final = self._chunk(name, "" if stream else "".join(tokens), chat, done=True)
        final.update(
            done_reason=reason,
            total_duration=int((time.perf_counter() - t0) * 1e9),
            load_duration=load_ns,
            prompt_eval_count=max(1, len(text.split())),
            prompt_eval_duration=prompt_eval_ns,
            eval_count=len(tokens),
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
    def _chunk(name: str, tok: str, chat: bool, done: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": name, "created_at": now_iso()}
        if chat:
            out["message"] = {"role": "assistant", "content": tok}
        else:
            out["response"] = tok
        out["done"] = done
        return out

    # --- endpoints -------------------------------------------------------------------
    async def generate(self, body: dict[str, Any], resp: Responder) -> None:
        await self._generate_like(body, resp, chat=False)

    async def chat(self, body: dict[str, Any], resp: Responder) -> None:
        await self._generate_like(body, resp, chat=True)

    async def embed(self, body: dict[str, Any], resp: Responder) -> None:
        model, err = self._check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        inp = body.get("input", [])
        inputs = [inp] if isinstance(inp, str) else inp
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            await resp.send_json(400, {"error": "invalid input type"})
            return
        t0 = time.perf_counter()
        slots = await self._acquire(resp)
        if slots is None:
            return
        try:
            load_ns = await self._load(model)
            if self.latency:
                await asyncio.sleep(self.latency)
            await resp.send_json(
                200,
                {
                    "model": body["model"],
                    "embeddings": [embedding_vector(model, s, self.embed_dim) for s in inputs],
                    "total_duration": int((time.perf_counter() - t0) * 1e9),
                    "load_duration": load_ns,
                    "prompt_eval_count": sum(max(1, len(s.split())) for s in inputs),
                },
            )
        finally:
            self._release(slots)

    async def embeddings(self, body: dict[str, Any], resp: Responder) -> None:
        model, err = self._check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        vec = embedding_vector(model, str(body.get("prompt", "")), self.embed_dim)
        await resp.send_json(200, {"embedding": vec})

    async def tags(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(
            200,
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2025-01-01T00:00:00.000000Z",
                        "size": 2019393189,
                        "digest": digest(m),
                        "details": details(m),
                    }
                    for m in self.models
                ]
            },
        )

    async def ps(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(
            200,
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "size": 3155000000,
                        "digest": digest(m),
                        "details": details(m),
                        "expires_at": now_iso(300),
                        "size_vram": 3155000000,
                        "context_length": 4096,
                    }
                    for m in self.models
                    if m in self.loaded
                ]
            },
        )

    async def show(self, body: dict[str, Any], resp: Responder) -> None:
        model, err = self._check_model(body)
        if err:
            await resp.send_json(err[0], {"error": err[1]})
            return
        assert model is not None
        await resp.send_json(
            200,
            {
                "modelfile": f"FROM {model}\n",
                "parameters": "",
                "template": "{{ .Prompt }}",
                "details": details(model),
                "model_info": {},
                "capabilities": ["completion"],
                "modified_at": "2025-01-01T00:00:00.000000Z",
            },
        )

    async def version_ep(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send_json(200, {"version": self.version})

    async def root(self, body: dict[str, Any], resp: Responder) -> None:
        await resp.send(200, b"Ollama is running", "text/plain; charset=utf-8")

    async def control(self, body: dict[str, Any], resp: Responder) -> None:
        """Stand-in only (not Ollama): change knobs of a stand-in running in another process."""
        try:
            self.faults.update(**body.get("faults", {}))
        except AttributeError as exc:
            await resp.send_json(400, {"error": str(exc)})
            return
        for key in ("latency", "tokens_per_s", "load_time", "default_tokens"):
            if key in body:
                setattr(self, key, body[key])
        if "models" in body:
            self.models = [normalize_model(m) for m in body["models"]]
        if "loaded" in body:
            self.loaded = {normalize_model(m) for m in body["loaded"]}
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
            "loaded": sorted(self.loaded),
            "faults": vars(self.faults),
        }


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
