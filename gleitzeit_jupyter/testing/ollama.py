"""An Ollama-compatible stand-in server with fault injection, for tests, benchmarks and demos.

Ollama itself cannot be installed on the machines this project is tested on, so this server
speaks Ollama's wire format (checked against the official ``ollama`` client in
tests/testing/test_ollama_standin.py) with a deterministic text generator.

In-process (its own thread and event loop, so sync and async tests can both drive it)::

    with OllamaStandIn(models=["llama3.2"], latency=0.02, num_parallel=4) as srv:
        srv.url                      # http://127.0.0.1:<free port>
        srv.faults.busy_rate = 0.5   # 503 "server busy" half the time
        srv.down(); srv.up()         # killed and back on the same port

As a process: ``python -m gleitzeit_jupyter.testing.ollama --port 11434 --models llama3.2``.
Knobs of a stand-in in another process can be changed with ``POST /_standin/control``
(``{"faults": {...}, "latency": ..., "models": [...]}``); ``GET /_standin/stats`` reads counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from ._ollama_api import ERR_BUSY, OllamaApi
from ._ollama_http import HttpRequest, HttpServer
from ._ollama_model import Faults, RecordedRequest, default_capabilities, normalize_model

__all__ = [
    "ERR_BUSY",
    "Faults",
    "OllamaStandIn",
    "RecordedRequest",
    "default_capabilities",
    "main",
    "normalize_model",
]


class OllamaStandIn:
    """One stand-in Ollama server.

    ``latency``: seconds before the first token (prompt evaluation); ``tokens_per_s``: token
    rate after it (0: instant); ``num_parallel``: calls served at once (Ollama's
    OLLAMA_NUM_PARALLEL), more wait in a queue of ``max_queue`` (OLLAMA_MAX_QUEUE) and then get
    503; ``models``: what ``/api/tags`` lists; ``loaded``: what ``/api/ps`` lists (default: none,
    a first call loads the model, taking ``load_time`` seconds); ``max_loaded``: models held in
    memory at once (OLLAMA_MAX_LOADED_MODELS; None: no limit), loading one more evicts the least
    recently used idle one; ``capabilities``: per model, what ``/api/show`` reports and the
    server enforces (``{"llava": ["completion", "vision"]}``; default: see
    :func:`default_capabilities`). ``srv.memory.loads`` counts cold loads per model.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        models: Iterable[str] = ("llama3.2:latest",),
        loaded: Iterable[str] = (),
        latency: float = 0.0,
        tokens_per_s: float = 0.0,
        num_parallel: int = 4,
        max_queue: int = 512,
        load_time: float = 0.0,
        default_tokens: int = 12,
        embed_dim: int = 16,
        version: str = "0.6.5",
        seed: int = 0,
        capabilities: dict[str, list[str]] | None = None,
        max_loaded: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api = OllamaApi(
            models=list(models),
            loaded=list(loaded),
            latency=latency,
            tokens_per_s=tokens_per_s,
            num_parallel=num_parallel,
            max_queue=max_queue,
            load_time=load_time,
            default_tokens=default_tokens,
            embed_dim=embed_dim,
            version=version,
            seed=seed,
            capabilities=capabilities,
            max_loaded=max_loaded,
        )
        self.disconnects: list[RecordedRequest] = []
        self._http = HttpServer(self.api.handle, self._on_disconnect)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._up = False
        self._lock = threading.Lock()

    # --- knobs (plain attributes; safe to set from any thread) -------------------------
    @property
    def faults(self) -> Faults:
        return self.api.faults

    @property
    def models(self) -> list[str]:
        return self.api.models

    @models.setter
    def models(self, names: Iterable[str]) -> None:
        self.api.models = [normalize_model(n) for n in names]

    @property
    def loaded(self) -> set[str]:
        return self.api.loaded

    @loaded.setter
    def loaded(self, names: Iterable[str]) -> None:
        self.api.loaded = {normalize_model(n) for n in names}

    def __getattr__(self, name: str) -> Any:
        # latency, tokens_per_s, load_time, default_tokens, requests, served, ... live on the
        # api object; forwarding keeps `srv.latency = 0.1` working from tests.
        if name in {"api", "_http"}:
            raise AttributeError(name)
        return getattr(self.api, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API_KNOBS:
            setattr(self.api, name, value)
        else:
            super().__setattr__(name, value)

    # --- observation -------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def open_connections(self) -> int:
        return self._http.open_connections

    @property
    def connections_total(self) -> int:
        return self._http.connections_total

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in list(self.api.requests) if r.path == path]

    def _on_disconnect(self, req: HttpRequest) -> None:
        try:
            body = req.json()
        except ValueError:
            body = None
        self.disconnects.append(RecordedRequest(req.method, req.path, body))
        if len(self.disconnects) > 1000:  # bounded, like everything held per server
            del self.disconnects[:500]

    # --- lifecycle ---------------------------------------------------------------------
    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def start(self) -> OllamaStandIn:
        """Start the thread and listen. Binds a free port when ``port`` is 0 and keeps it."""
        with self._lock:
            if self._thread is None:
                loop = asyncio.new_event_loop()
                self._loop = loop
                self._thread = threading.Thread(
                    target=loop.run_forever, name=f"ollama-standin-{self.port}", daemon=True
                )
                self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        """Listen again (after ``down``) on the same port."""
        if self._loop is None:
            self.start()
            return
        with self._lock:
            if not self._up:
                self.port = self._call(self._http.up(self.host, self.port))
                self._up = True

    def down(self, *, reset: bool = True) -> None:
        """Stop listening and drop every open connection (RST by default), like a killed
        process; new connections are refused until ``up``."""
        with self._lock:
            if self._up and self._loop is not None:
                self._call(self._http.down(reset=reset))
                self._up = False

    def restart(self) -> None:
        self.down()
        self.up()

    def stop(self) -> None:
        self.down()
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    def __enter__(self) -> OllamaStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "up" if self._up else "down"
        return f"<OllamaStandIn {self.url} {state} models={self.api.models}>"


_API_KNOBS = frozenset(
    {
        "latency",
        "tokens_per_s",
        "load_time",
        "default_tokens",
        "num_parallel",
        "max_queue",
        "max_loaded",
        "capabilities",
        "embed_dim",
        "version",
    }
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gleitzeit_jupyter.testing.ollama",
        description="Run an Ollama-compatible stand-in server (for tests and demos).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument(
        "--models",
        default="llama3.2:latest",
        help="comma-separated model names listed by /api/tags",
    )
    parser.add_argument("--loaded", default="", help="comma-separated models already loaded")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to first token")
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="0 = instant")
    parser.add_argument("--parallel", type=int, default=4, help="parallel slots")
    parser.add_argument("--max-queue", type=int, default=512)
    parser.add_argument("--load-time", type=float, default=0.0)
    parser.add_argument("--max-loaded", type=int, default=None, help="models held at once")
    parser.add_argument(
        "--capabilities",
        default="",
        help="per model, e.g. 'llava=completion+vision;qwen3=completion+thinking+tools'",
    )
    parser.add_argument("--tokens", type=int, default=12, help="tokens per answer")
    args = parser.parse_args(argv)

    def names(s: str) -> list[str]:
        return [n for n in (x.strip() for x in s.split(",")) if n]

    api = OllamaApi(
        models=names(args.models),
        loaded=names(args.loaded),
        latency=args.latency,
        tokens_per_s=args.tokens_per_s,
        num_parallel=args.parallel,
        max_queue=args.max_queue,
        load_time=args.load_time,
        default_tokens=args.tokens,
        embed_dim=16,
        version="0.6.5",
        seed=0,
        capabilities=_capabilities(args.capabilities),
        max_loaded=args.max_loaded,
    )

    async def serve() -> None:
        # A process of its own runs the server on the main loop: no thread needed.
        http = HttpServer(api.handle)
        port = await http.up(args.host, args.port)
        print(f"ollama stand-in listening on http://{args.host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await http.down(reset=False)

    asyncio.run(serve())


def _capabilities(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in text.split(";"):
        name, _, caps = part.partition("=")
        if name.strip():
            out[name.strip()] = [c for c in caps.split("+") if c]
    return out


if __name__ == "__main__":
    main()
