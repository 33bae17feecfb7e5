"""Helpers for the kernel tests: run a cell in a shell and capture what it showed."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Any

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

MODELS = ["llama3.2:latest", "qwen2.5:0.5b"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Cell:
    """What running one cell produced."""

    result: Any
    stdout: str
    stderr: str
    outputs: list[Any] = field(default_factory=list)

    @property
    def error(self) -> BaseException | None:
        return self.result.error_in_exec or self.result.error_before_exec

    @property
    def text(self) -> str:
        return ANSI.sub("", self.stdout + self.stderr)

    def data(self, mime: str) -> list[str]:
        """What the cell displayed in ``mime``, without the %%sandbox footer."""
        return [o.data[mime] for o in self.outputs if mime in o.data and not _footer(o)]

    @property
    def footer(self) -> str | None:
        """The text of the %%sandbox footer, if the cell showed one."""
        return next((o.data["text/plain"] for o in self.outputs if _footer(o)), None)


def _footer(output: Any) -> bool:
    meta = getattr(output, "metadata", None) or {}
    return bool((meta.get("gleitzeit") or {}).get("footer") == "sandbox")


def run(shell: InteractiveShell, source: str) -> Cell:
    with capture_output() as cap:
        result = shell.run_cell(source, store_history=True)
    return Cell(result, cap.stdout, cap.stderr, list(cap.outputs))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
