"""Per-call overhead of HubProvider.execute versus calling the same resource directly.

    .venv/bin/python bench/hub_overhead.py [--calls 20000] [--litellm-calls 2000]

Both paths call one in-memory resource with zero latency, in alternating blocks so machine
noise hits both alike; the overhead is the difference of the medians. When LiteLLM is
installed, its Router is measured the same way (Router.acompletion versus a bare
litellm.acompletion, both with ``mock_response`` so no network is involved) and the two
overheads are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider

BLOCK = 1000


async def _time_calls(fn, n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        await fn()
        out.append((clock() - t0) / 1000.0)  # µs
    return out


async def _side_by_side(direct, routed, calls: int) -> tuple[list[float], list[float]]:
    a: list[float] = []
    b: list[float] = []
    await _time_calls(direct, 200)  # warm-up
    await _time_calls(routed, 200)
    for _ in range(max(1, calls // BLOCK)):
        a += await _time_calls(direct, BLOCK)
        b += await _time_calls(routed, BLOCK)
    return a, b


def _report(label: str, direct: list[float], routed: list[float]) -> float:
    d50, r50 = statistics.median(direct), statistics.median(routed)
    d95 = statistics.quantiles(direct, n=20)[-1]
    r95 = statistics.quantiles(routed, n=20)[-1]
    print(f"{label}: {len(routed)} calls")
    print(f"  direct  p50 {d50:8.1f} µs   p95 {d95:8.1f} µs")
    print(f"  routed  p50 {r50:8.1f} µs   p95 {r95:8.1f} µs")
    print(f"  added per call at the median: {r50 - d50:.1f} µs  (routed/direct {r50 / d50:.2f}x)")
    return r50 - d50


async def hub(calls: int) -> float:
    provider = MemoryProvider(
        [MemoryConfig("a"), MemoryConfig("b"), MemoryConfig("c")], health_check_interval=60
    )
    await provider.initialize()
    resource = provider.resources["a"]
    params = {"value": 1}
    try:
        direct, routed = await _side_by_side(
            lambda: resource.call("x", params), lambda: provider.execute("x", params), calls
        )
    finally:
        await provider.shutdown()
    return _report("gleitzeit HubProvider.execute vs direct call", direct, routed)


async def litellm_router(calls: int) -> float | None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        print("LiteLLM: not installed (pip install litellm) - comparison not run")
        return None
    litellm.suppress_debug_info = True
    model = "ollama/llama3.2"
    deployments = [
        {"model_name": "m", "litellm_params": {"model": model, "api_base": f"http://h{i}:1"}}
        for i in range(3)
    ]
    router = litellm.Router(model_list=deployments, routing_strategy="least-busy")
    messages = [{"role": "user", "content": "hi"}]

    def direct():
        return litellm.acompletion(model=model, messages=messages, mock_response="ok")

    def routed():
        return router.acompletion(model="m", messages=messages, mock_response="ok")

    a, b = await _side_by_side(direct, routed, calls)
    return _report("LiteLLM Router.acompletion vs litellm.acompletion (mock_response)", a, b)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--litellm-calls", type=int, default=2_000)
    args = parser.parse_args()
    ours = await hub(args.calls)
    theirs = await litellm_router(args.litellm_calls) if args.litellm_calls else None
    print()
    print(f"hub overhead at the median: {ours:.1f} µs per call (target < 30 µs)")
    if theirs is not None:
        ratio = theirs / ours if ours > 0 else float("inf")
        print(f"LiteLLM router overhead: {theirs:.1f} µs per call -> hub adds {ratio:.0f}x less")


if __name__ == "__main__":
    asyncio.run(main())
