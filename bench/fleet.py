"""Benchmark: routing over an unequal Ollama fleet, every strategy side by side in one run.

Three stand-ins, each a process of its own (``python -m gleitzeit_jupyter.testing.ollama``):

    fast    400 tokens/s per slot, 4 slots, models A and B in memory
    middle  200 tokens/s per slot, 2 slots, A in memory, B on disk only, room for 1 model
    slow    100 tokens/s per slot, 1 slot,  A and B in memory

A cold load takes 1.5 s. 240 chat calls of 21 tokens each, 30 % of them for B, at client
concurrency 32, through OllamaProvider with each strategy, and through LiteLLM's Router
(simple-shuffle, least-busy, latency-based-routing) over the same stand-ins via its Ollama
provider. Printed per run: makespan, p50/p95 latency, calls and cold loads per instance, and
the fluid lower bound (calls / total service rate, loads ignored).

LiteLLM is not a dependency of the package: install it in a venv of its own and name it with
``--litellm-python`` (default ``.bench-venv/bin/python``; the LiteLLM rows are skipped with a
message when it cannot import litellm)::

    python3 -m venv .bench-venv && .bench-venv/bin/pip install litellm
    .venv/bin/python bench/fleet.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL_A, MODEL_B = "alpha:latest", "beta:latest"
TOKENS = 21
LOAD_S = 1.5


@dataclass(frozen=True)
class Server:
    name: str
    tps: float
    slots: int
    loaded: tuple[str, ...]
    max_loaded: int | None


FLEET = (
    Server("fast", 400, 4, (MODEL_A, MODEL_B), None),
    Server("middle", 200, 2, (MODEL_A,), 1),
    Server("slow", 100, 1, (MODEL_A, MODEL_B), None),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def standins() -> Iterator[list[str]]:
    procs, urls = [], []
    try:
        for s in FLEET:
            port = _free_port()
            cmd = [
                sys.executable,
                "-m",
                "gleitzeit_jupyter.testing.ollama",
                "--port",
                str(port),
                "--models",
                f"{MODEL_A},{MODEL_B}",
                "--loaded",
                ",".join(s.loaded),
                "--tokens-per-s",
                str(s.tps),
                "--parallel",
                str(s.slots),
                "--load-time",
                str(LOAD_S),
                "--tokens",
                str(TOKENS),
            ]
            if s.max_loaded is not None:
                cmd += ["--max-loaded", str(s.max_loaded)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        for url in urls:
            while True:
                try:
                    httpx.get(f"{url}/api/version", timeout=0.5)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(5)


def reset(urls: list[str]) -> list[dict[str, Any]]:
    """Put every stand-in back in its starting memory; return its counters."""
    out = []
    for s, url in zip(FLEET, urls, strict=True):
        r = httpx.post(f"{url}/_standin/control", json={"loaded": list(s.loaded)}, timeout=5)
        out.append(r.json())
    return out


def stats(urls: list[str]) -> list[dict[str, Any]]:
    return [httpx.get(f"{u}/_standin/stats", timeout=5).json() for u in urls]


def workload(calls: int, share_b: float, seed: int) -> list[str]:
    n_b = round(calls * share_b)
    models = [MODEL_B] * n_b + [MODEL_A] * (calls - n_b)
    random.Random(seed).shuffle(models)
    return models


def fluid_bound(calls: int) -> float:
    return calls * TOKENS / sum(s.tps * s.slots for s in FLEET)


# ---- OllamaProvider --------------------------------------------------------------------
async def run_provider(
    urls: list[str], strategy: str, models: list[str], concurrency: int, slots: bool
) -> tuple[float, list[float]]:
    from gleitzeit_jupyter.providers.ollama import OllamaConfig, OllamaProvider

    configs = [
        OllamaConfig(host=u, num_parallel=s.slots) if slots else OllamaConfig(host=u)
        for s, u in zip(FLEET, urls, strict=True)
    ]
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with OllamaProvider(
        configs, auto_discover=False, strategy=strategy, health_check_interval=60
    ) as p:

        async def one(model: str) -> None:
            async with sem:
                t0 = time.perf_counter()
                await p.execute(
                    "llm/chat", {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                )
                latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(m) for m in models))
        makespan = time.perf_counter() - t0
    return makespan, latencies


# ---- LiteLLM (runs in its own venv: this file is the worker too) -----------------------
async def _litellm_worker(strategy: str, urls: list[str], models: list[str], conc: int) -> None:
    import litellm

    litellm.suppress_debug_info = True
    model_list = [
        {"model_name": m, "litellm_params": {"model": f"ollama_chat/{m}", "api_base": u}}
        for u in urls
        for m in (MODEL_A, MODEL_B)
    ]
    router = litellm.Router(model_list=model_list, routing_strategy=strategy, num_retries=0)
    sem = asyncio.Semaphore(conc)
    latencies: list[float] = []

    async def one(model: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            await router.acompletion(model=model, messages=[{"role": "user", "content": "hi"}])
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(m) for m in models))
    print(json.dumps({"makespan": time.perf_counter() - t0, "latencies": latencies}))


def run_litellm(
    python: str, strategy: str, urls: list[str], models: list[str], conc: int
) -> tuple[float, list[float]] | str:
    args = [python, __file__, "--litellm-worker", strategy, "--concurrency", str(conc)]
    args += ["--urls", ",".join(urls), "--models", ",".join(models)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["failed"])[-1]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return out["makespan"], out["latencies"]


# ---- report ----------------------------------------------------------------------------
def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def row(
    label: str, makespan: float, lat: list[float], before: list[dict], after: list[dict]
) -> dict:
    calls = [
        sum(a["served"].get(p, 0) - b["served"].get(p, 0) for p in ("/api/chat",))
        for b, a in zip(before, after, strict=True)
    ]
    loads = [
        sum(a["loads"].values()) - sum(b["loads"].values())
        for b, a in zip(before, after, strict=True)
    ]
    return {
        "label": label,
        "makespan": makespan,
        "p50": statistics.median(lat),
        "p95": _pct(lat, 0.95),
        "calls": calls,
        "loads": loads,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=240)
    ap.add_argument("--share-b", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--strategies",
        default="fleet,round_robin,random,least_loaded,least_latency,weighted,affinity",
    )
    ap.add_argument("--litellm-python", default=str(Path(".bench-venv/bin/python")))
    ap.add_argument(
        "--litellm-strategies", default="simple-shuffle,least-busy,latency-based-routing"
    )
    ap.add_argument("--litellm-worker", help=argparse.SUPPRESS)
    ap.add_argument("--urls", help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.litellm_worker:
        urls, models = args.urls.split(","), args.models.split(",")
        asyncio.run(_litellm_worker(args.litellm_worker, urls, models, args.concurrency))
        return

    models = workload(args.calls, args.share_b, args.seed)
    bound = fluid_bound(args.calls)
    rows = []
    with standins() as urls:
        runs: list[tuple[str, Any]] = [
            (f"gleitzeit {s}", (s, True)) for s in args.strategies.split(",") if s
        ]
        runs.append(("gleitzeit fleet, slots not configured", ("fleet", False)))
        for label, (strategy, slots) in runs:
            before = reset(urls)
            took, lat = asyncio.run(run_provider(urls, strategy, models, args.concurrency, slots))
            rows.append(row(label, took, lat, before, stats(urls)))
        python = args.litellm_python
        if not os.path.exists(python):
            print(f"LiteLLM skipped: no {python} (see this file's docstring)\n")
        else:
            for strategy in args.litellm_strategies.split(","):
                before = reset(urls)
                got = run_litellm(python, strategy, urls, models, args.concurrency)
                if isinstance(got, str):
                    print(f"LiteLLM {strategy} skipped: {got}")
                    continue
                rows.append(row(f"LiteLLM {strategy}", got[0], got[1], before, stats(urls)))

    names = "/".join(s.name for s in FLEET)
    print(
        f"{args.calls} chat calls x {TOKENS} tokens, {args.share_b:.0%} on B, concurrency "
        f"{args.concurrency}; fleet {names}: "
        + ", ".join(f"{s.tps:g} tok/s x {s.slots}" for s in FLEET)
        + f"; cold load {LOAD_S:g} s; middle holds 1 model, starts without B"
    )
    print(f"fluid lower bound {bound:.2f} s\n")
    head = f"{'':40} {'makespan':>9} {'x bound':>8} {'p50':>7} {'p95':>7}  {'calls':>14}  loads"
    print(head)
    for r in rows:
        calls = "/".join(str(c) for c in r["calls"])
        loads = "/".join(str(c) for c in r["loads"])
        print(
            f"{r['label']:40} {r['makespan']:8.2f}s {r['makespan'] / bound:7.2f}x "
            f"{r['p50']:6.2f}s {r['p95']:6.2f}s  {calls:>14}  {loads}"
        )
    fleet = next((r for r in rows if r["label"] == "gleitzeit fleet"), None)
    rr = next((r for r in rows if r["label"] == "gleitzeit round_robin"), None)
    lite = [r for r in rows if r["label"].startswith("LiteLLM")]
    if fleet:
        print(f"\nfleet / bound: {fleet['makespan'] / bound:.2f}   <- target <= 1.25")
        if rr:
            print(f"round_robin / fleet: {rr['makespan'] / fleet['makespan']:.2f}   <- target >= 2")
        if lite:
            best = min(lite, key=lambda r: r["makespan"])
            print(
                f"best LiteLLM ({best['label']}) / fleet: "
                f"{best['makespan'] / fleet['makespan']:.2f}   <- target >= 2"
            )
        print(f"cold loads on middle (fleet): {fleet['loads'][1]}   <- target <= 1")


if __name__ == "__main__":
    main()
