"""Benchmark: per-call overhead of OpenAIProvider, measured side by side in one run.

Against one zero-latency OpenAI stand-in in its own process, interleaved rounds of the same
non-streaming chat call made three ways: ``provider.execute("llm/generate")``, a bare
``httpx.AsyncClient`` POST of the same body (the floor: target ratio <= 1.15), and the
official ``openai`` client (``AsyncOpenAI.chat.completions.create``). Medians per call and
the medians of per-round ratios are printed; nothing is compared with a figure from another
machine. Run::

    .venv/bin/python bench/openai_pool.py                 # about half a minute
    .venv/bin/python bench/openai_pool.py --calls 300 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import openai

from gleitzeit_jupyter.providers.openai import OpenAIProvider

MODEL = "llama3.2"
MESSAGES = [{"role": "user", "content": "hello"}]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def standin() -> Iterator[str]:
    port = _free_port()
    args = ["--port", str(port), "--models", MODEL, "--parallel", "64"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gleitzeit_jupyter.testing.openai", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(5)


async def measure(url: str, calls: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call in each round, per way of calling."""
    body = {"model": MODEL, "messages": MESSAGES}
    target = httpx.URL(f"{url}/chat/completions")
    out: dict[str, list[float]] = {"provider": [], "httpx": [], "openai": []}
    async with (
        OpenAIProvider(hosts=[url], health_check_interval=30.0) as p,
        httpx.AsyncClient() as bare,
        openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0) as official,
    ):

        async def via_provider() -> None:
            await p.execute("llm/generate", {"model": MODEL, "prompt": "hello"})

        async def via_httpx() -> None:
            r = await bare.post(target, json=body)
            r.raise_for_status()
            r.json()

        async def via_openai() -> None:
            await official.chat.completions.create(model=MODEL, messages=MESSAGES)

        ways = {"provider": via_provider, "httpx": via_httpx, "openai": via_openai}
        for fn in ways.values():  # warm every path (connections, imports, caches)
            for _ in range(50):
                await fn()
        for _ in range(rounds):  # interleaved, so machine noise hits all alike
            for name, fn in ways.items():
                t0 = time.perf_counter()
                for _ in range(calls):
                    await fn()
                out[name].append((time.perf_counter() - t0) / calls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=500, help="calls per way per round")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} (shared)")
    with standin() as url:
        per_call = asyncio.run(measure(url, args.calls, args.rounds))
    med = {k: statistics.median(v) for k, v in per_call.items()}
    for name, value in med.items():
        print(
            f"  {name:<9} median {value * 1e6:8.0f} us/call  (best {min(per_call[name]) * 1e6:.0f})"
        )

    # Ratios within each round (the three ran back to back), then their median: on a shared
    # machine the load moves between rounds far more than within one.
    def ratio(other: str) -> float:
        return statistics.median(
            a / b for a, b in zip(per_call["provider"], per_call[other], strict=True)
        )

    to_httpx = ratio("httpx")
    verdict = "ok" if to_httpx <= 1.15 else "ABOVE TARGET"
    print(f"  provider / bare httpx POST: {to_httpx:.3f}x (target <= 1.15: {verdict})")
    print(f"  provider / official openai client: {ratio('openai'):.3f}x")


if __name__ == "__main__":
    main()
