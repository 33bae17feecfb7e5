"""Drive a real Jupyter kernel cell by cell with nbclient, the way a notebook front end does."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Cell:
    def __init__(self, node: Any) -> None:
        self.node = node

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.node.get("outputs", []))

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [o for o in self.outputs if o["output_type"] == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            o["text"] for o in self.outputs if o["output_type"] == "stream" and o["name"] == name
        )

    def data(self, mime: str) -> list[Any]:
        return [
            o["data"][mime]
            for o in self.outputs
            if o["output_type"] in ("display_data", "execute_result") and mime in o["data"]
        ]

    def error_text(self) -> str:
        return "\n".join(ANSI.sub("", line) for o in self.errors for line in o["traceback"])

    def __repr__(self) -> str:
        return f"<Cell {self.node.source[:40]!r} outputs={self.outputs!r:.2000}>"


class Notebook:
    """A notebook whose cells are appended and run one at a time in a real kernel."""

    def __init__(self, workdir: Path, timeout: int = 180) -> None:
        self.workdir = workdir
        self.nb = nbformat.v4.new_notebook()
        self.client = NotebookClient(
            self.nb,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(workdir)}},
        )

    async def start(self, env: dict[str, str] | None = None) -> None:
        self.client.km = self.client.create_kernel_manager()
        if env is not None:
            await self.client.async_start_new_kernel(env=env)
        else:
            await self.client.async_start_new_kernel()
        await self.client.async_start_new_kernel_client()

    async def run(self, source: str) -> Cell:
        node = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(node)
        await self.client.async_execute_cell(node, len(self.nb.cells) - 1)
        return Cell(node)

    async def run_and_interrupt(self, source: str, after: float) -> tuple[Cell, float]:
        """Run ``source`` and press the stop button ``after`` seconds in; returns the cell and
        the seconds from the interrupt to the cell's end."""
        node = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(node)
        task = asyncio.ensure_future(self.client.async_execute_cell(node, len(self.nb.cells) - 1))
        await asyncio.sleep(after)
        assert not task.done(), f"the cell ended before the interrupt: {node.outputs}"
        loop = asyncio.get_running_loop()
        pressed = loop.time()
        await self.client.km.interrupt_kernel()
        await task
        return Cell(node), loop.time() - pressed

    async def restart(self) -> None:
        await self.client.km.restart_kernel(now=False)
        await self.client.kc.wait_for_ready(timeout=60)

    async def stop(self) -> None:
        await self.client._async_cleanup_kernel()

    def save(self, name: str) -> Path:
        path = self.workdir / name
        nbformat.write(self.nb, path)
        return path
