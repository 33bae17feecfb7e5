"""Streaming runs against the real engine: output arrives while the code runs."""

from __future__ import annotations

import time
import uuid

import pytest

from gleitzeit_jupyter.providers.sandbox import PythonProvider

from .conftest import run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def test_output_arrives_while_the_code_runs(pool: PythonProvider) -> None:
    assert pool.streams_output is True
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)\n'end'"
    started = time.perf_counter()
    seen: list[tuple[float, dict]] = []
    async for chunk in pool.stream("python/execute", {"code": code}):
        seen.append((time.perf_counter() - started, chunk))
    done = seen[-1][1]
    assert done["done"] is True and done["stdout"] == "0\n1\n2\n"
    assert done["outputs"][0]["data"]["text/plain"] == "'end'"
    streamed = "".join(c.get("stdout", "") for _, c in seen[:-1])
    assert streamed == "0\n1\n2\n"
    first_at = next(t for t, c in seen if c.get("stdout"))
    assert first_at < seen[-1][0] - 0.6  # the first line came well before the end


async def test_streamed_output_is_capped_with_the_marker(pool: PythonProvider) -> None:
    code = "import sys\nsys.stdout.write('y' * 5000)\nsys.stderr.write('e')"
    chunks = [c async for c in pool.stream("python/execute", {"code": code, "max_output": 1000})]
    streamed = "".join(c.get("stdout", "") for c in chunks[:-1])
    assert streamed.startswith("y" * 1000) and "4000 more bytes not shown" in streamed
    assert "y" * 1001 not in streamed
    assert "".join(c.get("stderr", "") for c in chunks[:-1]) == "e"


async def test_stopping_to_read_stops_the_run(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.05)"
    stream = pool.stream("python/execute", {"code": code}, instance=inst)
    async for chunk in stream:
        assert chunk["stdout"].startswith("tick")
        break
    await stream.aclose()
    r = await run(pool, "print('next')", instance=inst)
    assert r["stdout"] == "next\n"


async def test_streaming_sessions_share_the_namespace_with_execute(pool: PythonProvider) -> None:
    name = f"st-{uuid.uuid4().hex[:6]}"
    chunks = [c async for c in pool.stream("python/execute", {"code": "v = 41", "session": name})]
    assert chunks[-1]["session_new"] is True
    r = await run(pool, "v + 1", session=name)
    assert r["outputs"][0]["data"]["text/plain"] == "42"
    assert r["instance"] == chunks[-1]["instance"]
