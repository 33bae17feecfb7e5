"""The %%sandbox side of streamed output, against a provider that streams python/execute.

The docker PythonProvider returns stdout when a run ends; this pins the protocol the kernel
speaks to a provider that sets ``streams_output`` (chunks while the code runs, then the
result), using a real HubProvider that runs the code in a local ``python`` subprocess.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gleitzeit_jupyter.hub import HubProvider, ResourceInstance
from gleitzeit_jupyter.kernel import sandbox_cell
from gleitzeit_jupyter.kernel.render import CellInterrupted, SandboxException
from gleitzeit_jupyter.kernel.runtime import Gleitzeit, Runtime


class SubprocessSandbox(HubProvider[str]):
    """python/execute in a child process, stdout/stderr streamed line by line."""

    streams_output = True

    def __init__(self) -> None:
        super().__init__(name="sandbox", health_check_interval=60)
        self.killed = 0

    async def initial_resources(self) -> list[str]:
        return ["local"]

    async def create_resource(self, config: str) -> ResourceInstance:
        return ResourceInstance(id="local-1", config=config, endpoint="local")

    async def destroy_resource(self, instance: ResourceInstance) -> None:
        return None

    async def check_resource_health(self, instance: ResourceInstance) -> bool:
        return True

    async def execute_on_resource(self, instance, method, params) -> dict[str, Any]:
        result: dict[str, Any] = {}
        async for chunk in self.stream_on_resource(instance, method, params):
            result = chunk
        return result

    async def stream_on_resource(
        self, instance: ResourceInstance, method: str, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-u",
            "-c",
            params["code"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()

        async def pump(name: str, reader: asyncio.StreamReader) -> None:
            async for line in reader:
                await queue.put((name, line.decode()))
            await queue.put(None)

        pumps = [
            asyncio.create_task(pump("stdout", proc.stdout)),  # type: ignore[arg-type]
            asyncio.create_task(pump("stderr", proc.stderr)),
        ]  # type: ignore[arg-type]
        try:
            ended = 0
            while ended < 2:
                item = await queue.get()
                if item is None:
                    ended += 1
                    continue
                name, text = item
                out[name].append(text)
                yield {name: text}
            code = await proc.wait()
        finally:
            if proc.returncode is None:  # cancelled: the run must not go on
                proc.kill()
                self.killed += 1
                await proc.wait()
            for p in pumps:
                p.cancel()
        error = None
        if code:
            tb = "".join(out["stderr"])
            last = tb.strip().splitlines()[-1] if tb.strip() else "Error: failed"
            ename, _, evalue = last.partition(": ")
            error = {"ename": ename, "evalue": evalue, "traceback": tb}
        yield {
            "done": True,
            "stdout": "".join(out["stdout"]),
            "stderr": "".join(out["stderr"]),
            "exit_code": code,
            "error": error,
            "timed_out": False,
            "outputs": [],
            "values": {},
            "instance": instance.id,
        }


class Recorder(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[float, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((time.monotonic(), text))
        return super().write(text)


@pytest.fixture
def rt():
    runtime = Runtime(Gleitzeit())
    provider = runtime.get_or_create("sandbox", SubprocessSandbox)
    yield runtime, provider
    runtime.shutdown()


def test_output_arrives_while_the_code_runs(rt, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _ = rt
    out, err = Recorder(), Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    code = (
        "import sys, time\nprint('first')\nprint('warn', file=sys.stderr)\n"
        "time.sleep(1.0)\nprint('second')"
    )
    sandbox_cell.run_cell(runtime, code, {}, footer=False)
    end = time.monotonic()
    assert out.getvalue() == "first\nsecond\n"  # each line once: not repeated at the end
    assert err.getvalue() == "warn\n"
    first_at = next(t for t, text in out.writes if "first" in text)
    assert end - first_at > 0.8, "the first line should appear before the run ends"


def test_streamed_error_and_interrupt(rt, monkeypatch: pytest.MonkeyPatch) -> None:
    import _thread
    import threading

    runtime, provider = rt
    monkeypatch.setattr(sys, "stdout", Recorder())
    monkeypatch.setattr(sys, "stderr", Recorder())
    with pytest.raises(SandboxException, match="ZeroDivisionError"):
        sandbox_cell.run_cell(runtime, "print('x')\n1/0", {})
    threading.Timer(0.8, _thread.interrupt_main).start()
    start = time.monotonic()
    with pytest.raises(CellInterrupted):
        sandbox_cell.run_cell(runtime, "import time\nprint('go')\ntime.sleep(30)", {})
    assert time.monotonic() - start < 5
    assert provider.killed == 1
