"""CPU time and peak memory of runs, measured by the supervisor, in results and metrics."""

from __future__ import annotations

import pytest

from gleitzeit_jupyter.providers.sandbox import PythonProvider

from .conftest import run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def test_a_busy_run_reports_more_cpu_than_an_idle_one(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    idle = await run(pool, "import time\ntime.sleep(0.3)", instance=inst)
    busy = await run(pool, "x = sum(i * i for i in range(8_000_000))", instance=inst)
    assert idle["cpu_ms"] < 100 and busy["cpu_ms"] >= 200, (idle["cpu_ms"], busy["cpu_ms"])


async def test_peak_memory_follows_what_the_run_allocated(pool: PythonProvider) -> None:
    small = await run(pool, "x = 1")
    big = await run(pool, "x = bytearray(200 * 1024 * 1024)")
    assert big["peak_memory_mb"] >= small["peak_memory_mb"] + 150, (small, big)


async def test_metrics_have_cpu_and_peak_memory_per_instance(pool: PythonProvider) -> None:
    inst = pool.instances[1].id
    before = pool.metrics().set_index("instance").loc[inst, "cpu_ms"]
    await run(pool, "x = bytearray(100 * 1024 * 1024)\nsum(range(2_000_000))", instance=inst)
    row = pool.metrics().set_index("instance").loc[inst]
    assert row["cpu_ms"] > before and row["peak_memory_mb"] >= 100
    total = pool.metrics().set_index("instance").loc["ALL"]
    assert total["cpu_ms"] >= row["cpu_ms"] and total["peak_memory_mb"] >= row["peak_memory_mb"]
