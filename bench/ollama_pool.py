"""Benchmark: OllamaProvider over a pool of Ollama stand-ins, ratios measured side by side.

1. Pool throughput: N non-streaming generate calls over 4 stand-ins (4 parallel slots each,
   20 ms per call), through the provider, against the ideal ``N x 20 ms / 16 slots`` and
   against the same calls made with the official ``ollama`` client in a loop.
2. Per-call overhead against one zero-latency stand-in: provider.execute versus a bare
   ``httpx.AsyncClient`` POST of the same body, interleaved rounds, medians.

The stand-ins run as separate processes (``python -m gleitzeit_jupyter.testing.ollama``) so
they do not share the client's interpreter. Run::

    .venv/bin/python bench/ollama_pool.py            # full run (about two minutes)
    .venv/bin/python bench/ollama_pool.py --calls 400 --repeats 1 --overhead-calls 300
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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import ollama

from gleitzeit_jupyter.providers.ollama import OllamaConfig, OllamaProvider

MODEL = "llama3.2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def standins(n: int, latency: float, parallel: int) -> Iterator[list[str]]:
    procs, urls = [], []
    try:
        for _ in range(n):
            port = _free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "gleitzeit_jupyter.testing.ollama",
                        "--port",
                        str(port),
                        "--models",
                        MODEL,
                        "--loaded",
                        MODEL,
                        "--latency",
                        str(latency),
                        "--parallel",
                        str(parallel),
                        "--tokens",
                        "12",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for p in procs:
            assert p.stdout is not None and "listening" in p.stdout.readline()
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(5)


def _provider(urls: list[str], max_concurrency: int | None = None) -> OllamaProvider:
    return OllamaProvider(
        hosts=[OllamaConfig(host=u, max_concurrency=max_concurrency) for u in urls],
        auto_discover=False,
        health_check_interval=30.0,
    )


async def pool_run(
    urls: list[str], calls: int, concurrency: int, max_concurrency: int | None
) -> tuple[float, float, Counter]:
    async with _provider(urls, max_concurrency) as p:
        await asyncio.gather(
            *(
                p.execute("llm/generate", {"model": MODEL, "prompt": "warm"})
                for _ in range(len(urls) * 4)
            )
        )  # open connections first
        sem = asyncio.Semaphore(concurrency)
        where: Counter = Counter()

        async def one(i: int) -> None:
            async with sem:
                r = await p.execute("llm/generate", {"model": MODEL, "prompt": f"q{i}"})
                where[r["instance"]] += 1

        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - t0, time.process_time() - c0, where


async def bare_run(urls: list[str], calls: int, concurrency: int) -> tuple[float, float]:
    """The same calls as bare httpx POSTs, round robin: what this machine allows at all."""
    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=32)) for _ in urls]
    targets = [httpx.URL(f"{u}/api/generate") for u in urls]
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            k = i % len(urls)
            r = await clients[k].post(
                targets[k], json={"model": MODEL, "prompt": f"q{i}", "stream": False}
            )
            r.raise_for_status()
            r.json()

    await asyncio.gather(*(one(i) for i in range(len(urls) * 4)))
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for c in clients:
        await c.aclose()
    return wall, cpu


def official_loop(urls: list[str], calls: int) -> float:
    clients = [ollama.Client(host=u) for u in urls]
    for c in clients:
        c.generate(model=MODEL, prompt="warm")
    t0 = time.perf_counter()
    for i in range(calls):  # what a notebook does without a pool: one call after another
        clients[i % len(clients)].generate(model=MODEL, prompt=f"q{i}")
    return time.perf_counter() - t0


async def overhead(url: str, calls: int, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds per call in each round: (provider, bare httpx)."""
    body = {"model": MODEL, "prompt": "hello", "stream": False}
    prov_s: list[float] = []
    bare_s: list[float] = []
    target = httpx.URL(f"{url}/api/generate")  # prebuilt: the cheapest bare POST there is
    async with _provider([url]) as p, httpx.AsyncClient() as bare:
        for _ in range(50):  # warm both paths
            await p.execute("llm/generate", {"model": MODEL, "prompt": "hello"})
            (await bare.post(target, json=body)).json()
        for _ in range(rounds):  # interleaved, so machine noise hits both alike
            t0 = time.perf_counter()
            for _ in range(calls):
                await p.execute("llm/generate", {"model": MODEL, "prompt": "hello"})
            prov_s.append((time.perf_counter() - t0) / calls)
            t0 = time.perf_counter()
            for _ in range(calls):
                r = await bare.post(target, json=body)
                r.raise_for_status()
                r.json()
            bare_s.append((time.perf_counter() - t0) / calls)
    return prov_s, bare_s


def _line(
    label: str, walls: list[float], cpus: list[float], calls: int, ideal: float, note: str = ""
) -> None:
    best, med = min(walls), statistics.median(walls)
    cpu_us = statistics.median(cpus) / calls * 1e6
    print(
        f"  {label:<34} best {best:6.3f} s  median {med:6.3f} s  efficiency "
        f"{ideal / best:.3f} (median {ideal / med:.3f})  client cpu {cpu_us:5.0f} us/call"
        f"{note}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each run")
    ap.add_argument("--overhead-calls", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    lat = args.latency_ms / 1000.0
    slots = args.instances * args.parallel
    ideal = args.calls * lat / slots
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} (shared)")

    runs: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ("p", "b", "q")}
    with standins(args.instances, lat, args.parallel) as urls:
        for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits all alike
            wall, cpu, where = asyncio.run(pool_run(urls, args.calls, args.concurrency, None))
            runs["p"][0].append(wall)
            runs["p"][1].append(cpu)
            wall, cpu = asyncio.run(bare_run(urls, args.calls, args.concurrency))
            runs["b"][0].append(wall)
            runs["b"][1].append(cpu)
            wall, cpu, _ = asyncio.run(pool_run(urls, args.calls, args.concurrency, args.parallel))
            runs["q"][0].append(wall)
            runs["q"][1].append(cpu)
        loop = official_loop(urls, args.calls)
    print(
        f"\n{args.calls} calls, {args.instances} stand-ins x {args.parallel} slots, "
        f"{args.latency_ms:g} ms per call, client concurrency {args.concurrency}, "
        f"{args.repeats} interleaved repeats"
    )
    print(f"  ideal (calls x latency / {slots} slots)   {ideal:6.3f} s")
    _line("OllamaProvider", *runs["p"], args.calls, ideal, "   <- target >= 0.85")
    _line("bare httpx POSTs, round robin", *runs["b"], args.calls, ideal, "   <- ceiling")
    _line(
        f"OllamaProvider, max_concurrency={args.parallel}",
        *runs["q"],
        args.calls,
        ideal,
        "   <- hub queues",
    )
    best, med = min(runs["p"][0]), statistics.median(runs["p"][0])
    print(
        f"  official ollama.Client, in a loop  {loop:6.3f} s   OllamaProvider is "
        f"{loop / best:.1f}x faster (median {loop / med:.1f}x)"
    )
    print(f"  calls per instance (last run): {sorted(where.values())}")

    with standins(1, 0.0, args.parallel) as urls:
        prov, bare = asyncio.run(overhead(urls[0], args.overhead_calls, args.rounds))
    ratios = sorted(p / b for p, b in zip(prov, bare, strict=True))
    print(
        f"\nper-call overhead, one zero-latency stand-in, {args.rounds} interleaved rounds x "
        f"{args.overhead_calls} sequential calls"
    )
    print(
        f"  bare httpx.AsyncClient POST   median {statistics.median(bare) * 1e6:7.1f} us/call"
        f"  best {min(bare) * 1e6:7.1f}"
    )
    print(
        f"  OllamaProvider.execute        median {statistics.median(prov) * 1e6:7.1f} us/call"
        f"  best {min(prov) * 1e6:7.1f}"
    )
    print(
        f"  ratio provider / bare: median of rounds {statistics.median(ratios):.3f}, "
        f"best-vs-best {min(prov) / min(bare):.3f}   <- target <= 1.15"
    )


if __name__ == "__main__":
    main()
