"""An OpenAI-compatible stand-in server (vLLM-like by default) with fault injection, for
tests, benchmarks and demos. Its wire format is checked against the official ``openai``
client in tests/testing/test_openai_standin.py.

In-process (its own thread and event loop)::

    with OpenAIStandIn(models=["Qwen/Qwen2.5-7B-Instruct"], num_parallel=4) as srv:
        srv.url                            # http://127.0.0.1:<port>/v1
        srv.faults.rate_limit_rate = 0.5   # 429 with Retry-After half the time
        srv.faults.extra_waiting = 20      # /metrics reports 20 requests queued
        srv.down(); srv.up()               # killed (RST) and back on the same port

``engine`` picks the ``/metrics`` gauge names (``"vllm"``, ``"sglang"``, ``"llama.cpp"``,
``"tgi"``, which also answers ``/info`` instead of ``/v1/models``; None: no ``/metrics``,
like LM Studio); ``has_health=False`` drops ``/health``; ``api_key``
makes ``/v1/*`` answer 401 without ``Authorization: Bearer <key>``.
As a process: ``python -m gleitzeit_jupyter.testing.openai --port 8000 --models m1,m2``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from ._ollama_http import HttpServer
from ._ollama_model import RecordedRequest
from ._openai_api import GAUGES, OpenAIApi, OpenAIFaults

__all__ = ["GAUGES", "OpenAIFaults", "OpenAIStandIn", "main"]

_KNOBS = frozenset(
    {"latency", "tokens_per_s", "default_tokens", "num_parallel", "max_queue", "api_key", "engine"}
)


class OpenAIStandIn:
    """One stand-in OpenAI-compatible server. ``latency``: seconds before the first token;
    ``tokens_per_s``: token rate (0: instant); ``num_parallel``: requests served at once,
    more wait in a queue of ``max_queue`` and then get 429."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        models: Iterable[str] = ("llama3.2",),
        latency: float = 0.0,
        tokens_per_s: float = 0.0,
        num_parallel: int = 8,
        max_queue: int = 512,
        default_tokens: int = 12,
        embed_dim: int = 16,
        api_key: str | None = None,
        engine: str | None = "vllm",
        has_health: bool = True,
        seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.api = OpenAIApi(
            models=list(models),
            latency=latency,
            tokens_per_s=tokens_per_s,
            num_parallel=num_parallel,
            max_queue=max_queue,
            default_tokens=default_tokens,
            embed_dim=embed_dim,
            api_key=api_key,
            engine=engine,
            has_health=has_health,
            seed=seed,
        )
        self.disconnects: list[RecordedRequest] = []
        self._http = HttpServer(self.api.handle, lambda req: self.disconnects.append(
            RecordedRequest(req.method, req.path, None)))  # fmt: skip
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._up = False
        self._lock = threading.Lock()

    @property
    def faults(self) -> OpenAIFaults:
        return self.api.faults

    @property
    def models(self) -> list[str]:
        return self.api.models

    @models.setter
    def models(self, names: Iterable[str]) -> None:
        self.api.models = list(names)

    def __getattr__(self, name: str) -> Any:
        if name in {"api", "_http"}:
            raise AttributeError(name)
        return getattr(self.api, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _KNOBS:
            setattr(self.api, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL OpenAI clients take (with ``/v1``)."""
        return f"{self.root}/v1"

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def open_connections(self) -> int:
        return self._http.open_connections

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in list(self.api.requests) if r.path == path]

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        assert self._loop is not None
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def start(self) -> OpenAIStandIn:
        with self._lock:
            if self._thread is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="openai-standin", daemon=True
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
        """Stop listening and drop every open connection (RST), like a killed process."""
        with self._lock:
            if self._up and self._loop is not None:
                self._call(self._http.down(reset=reset))
                self._up = False

    def stop(self) -> None:
        self.down()
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    def __enter__(self) -> OpenAIStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<OpenAIStandIn {self.url} {'up' if self._up else 'down'} models={self.models}>"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gleitzeit_jupyter.testing.openai",
        description="Run an OpenAI-compatible stand-in server (for tests and demos).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--models", default="llama3.2", help="comma-separated model ids")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--tokens-per-s", type=float, default=0.0, help="0 = instant")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--engine", default="vllm", help="vllm | sglang | llama.cpp | tgi | none")
    args = parser.parse_args(argv)
    srv = OpenAIStandIn(
        host=args.host,
        port=args.port,
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        latency=args.latency,
        tokens_per_s=args.tokens_per_s,
        num_parallel=args.parallel,
        api_key=args.api_key,
        engine=None if args.engine == "none" else args.engine,
    )
    with srv:
        print(f"openai stand-in listening on {srv.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
