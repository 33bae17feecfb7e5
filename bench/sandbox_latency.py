"""Sandbox latency, side by side in one run: the warm pool vs ``exec_run`` vs a cold container.

    .venv/bin/python bench/sandbox_latency.py [--rounds 10] [--check] [--runsc-host URL]

For ``print(1)``: a run on the warm pool (PythonProvider.execute, the whole hub path, a fresh
worker per run; a session run, which reuses its worker, is shown for reference), a
``docker exec`` (``exec_run``) of ``python3 -c 'print(1)'`` in an already running container, and
a cold ``containers.run`` of the same. The three are interleaved round by round so they share
whatever load the machine has. Then 200 runs at concurrency 5 on a pool of 5 containers.

With ``--runsc-host`` (default ``$GLEITZEIT_RUNSC_HOST``), the docker engine of that URL with
gVisor registered as ``runsc`` (``gz_docker_start_runsc`` in scripts/lib/docker.sh starts
one), warm runs on a gVisor pool are interleaved too and reported beside runc.

Targets (issue 4): warm p50 <= 5 ms, >= 10x faster than exec_run, >= 100 runs/s.
``--check`` exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time

import docker

from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.engine import LABEL
from gleitzeit_jupyter.providers.sandbox.image import DEFAULT_IMAGE


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def line(name: str, values: list[float]) -> str:
    return (
        f"{name:<22} n={len(values):<4} p50={pct(values, 50):8.2f} ms  "
        f"p95={pct(values, 95):8.2f} ms  mean={statistics.fmean(values):8.2f} ms"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warm-per-round", type=int, default=30)
    parser.add_argument("--exec-per-round", type=int, default=3)
    parser.add_argument("--throughput-runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--runsc-host",
        default=os.environ.get("GLEITZEIT_RUNSC_HOST"),
        help="docker engine with gVisor registered as runsc (warm runs under runsc too)",
    )
    args = parser.parse_args()

    client = docker.from_env()
    code = "print(1)"
    warm: list[float] = []
    session: list[float] = []
    execs: list[float] = []
    cold: list[float] = []
    gvisor: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(
            PythonProvider(
                max_containers=args.concurrency, min_warm=args.concurrency, image=args.image
            )
        )
        gv = None
        if args.runsc_host:
            gv = await stack.enter_async_context(
                PythonProvider(
                    max_containers=1,
                    min_warm=1,
                    image=args.image,
                    runtime="runsc",
                    docker_hosts=[args.runsc_host],
                )
            )
        await asyncio.sleep(2.0)  # let the supervisors finish their idle pre-imports
        target = client.containers.get(pool.instances[0].metadata["container"])
        for _ in range(3):  # warm-up of every path
            await pool.execute("python/execute", {"code": code})
        for _ in range(args.rounds):
            for _ in range(args.warm_per_round):
                t = time.perf_counter()
                r = await pool.execute("python/execute", {"code": code})
                warm.append((time.perf_counter() - t) * 1e3)
                assert r["stdout"] == "1\n", r
            for _ in range(args.warm_per_round if gv is not None else 0):
                t = time.perf_counter()
                r = await gv.execute("python/execute", {"code": code})  # type: ignore[union-attr]
                gvisor.append((time.perf_counter() - t) * 1e3)
                assert r["stdout"] == "1\n", r
            for _ in range(args.warm_per_round // 3):  # for reference: no fork at all
                t = time.perf_counter()
                r = await pool.execute("python/execute", {"code": code, "session": "bench"})
                session.append((time.perf_counter() - t) * 1e3)
                assert r["stdout"] == "1\n", r
            for _ in range(args.exec_per_round):
                t = time.perf_counter()
                out = await asyncio.to_thread(target.exec_run, ["python3", "-c", code])
                execs.append((time.perf_counter() - t) * 1e3)
                assert out.output == b"1\n", out
            t = time.perf_counter()
            out = await asyncio.to_thread(
                client.containers.run,
                args.image,
                ["python3", "-c", code],
                remove=True,
                network_mode="none",
                labels={LABEL: "1", "gleitzeit.sandbox.bench": "cold"},
            )
            cold.append((time.perf_counter() - t) * 1e3)
            assert out == b"1\n", out

        sem = asyncio.Semaphore(args.concurrency)

        async def one() -> None:
            async with sem:
                r = await pool.execute("python/execute", {"code": code})
                assert r["stdout"] == "1\n", r

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(args.throughput_runs)))
        elapsed = time.perf_counter() - t
    client.close()

    throughput = args.throughput_runs / elapsed
    w50, e50, c50 = pct(warm, 50), pct(execs, 50), pct(cold, 50)
    print(f"sandbox latency for {code!r} (image {args.image}), interleaved in {args.rounds} rounds")
    print(line("warm pool run", warm))
    print(line("warm session run", session))
    if gvisor:
        print(line("warm pool run (runsc)", gvisor))
    print(line("exec_run (running)", execs))
    print(line("cold containers.run", cold))
    print(f"ratios (p50): exec_run / warm = {e50 / w50:.1f}x   cold / warm = {c50 / w50:.1f}x")
    if gvisor:
        print(f"gVisor (p50): runsc / runc warm = {pct(gvisor, 50) / w50:.2f}x")
    print(
        f"throughput: {args.throughput_runs} runs at concurrency {args.concurrency} in "
        f"{elapsed:.2f} s = {throughput:.0f} runs/s"
    )
    checks = [
        ("warm p50 <= 5 ms", w50 <= 5.0),
        ("exec_run/warm >= 10x", e50 / w50 >= 10),
        ("throughput >= 100 runs/s", throughput >= 100),
    ]
    for name, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {name}")
    return 0 if (all(ok for _, ok in checks) or not args.check) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
