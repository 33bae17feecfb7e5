"""The tracebacks of failed cells, as plain text, for ``{Err}`` and ``{Err[N]}`` in prompts.

Recorded from IPython's ``post_run_cell`` event as the text the notebook showed (colours
stripped: a model reads the words, not the escape codes). Only text is kept, never the
exception, whose frames would pin every local variable of the failed cell in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .render import strip_ansi

__all__ = ["ErrorLog"]

# Bounded: a long session of failing cells must not grow the kernel without limit.
_KEEP = 100


class ErrorLog:
    def __init__(self, shell: Any) -> None:
        self._shell = shell
        self._by_cell: OrderedDict[int, str] = OrderedDict()
        self.latest: str | None = None

    def cell(self, number: int) -> str | None:
        return self._by_cell.get(number)

    def on_post_run_cell(self, result: Any) -> None:
        exc = result.error_in_exec or result.error_before_exec
        if exc is None:
            return
        text = self._traceback_text(exc, before_exec=result.error_in_exec is None)
        self.latest = text
        count = result.execution_count
        if isinstance(count, int):
            self._by_cell[count] = text
            self._by_cell.move_to_end(count)
            while len(self._by_cell) > _KEEP:
                self._by_cell.popitem(last=False)

    def _traceback_text(self, exc: BaseException, *, before_exec: bool) -> str:
        try:
            render = getattr(exc, "_render_traceback_", None)
            if callable(render):
                lines = list(render())
            elif before_exec:
                # A syntax error: the frames are IPython's compiler, not the user's code.
                lines = self._shell.SyntaxTB.structured_traceback(type(exc), exc, None)
            else:
                # Offset 1 drops IPython's own run_code frame, as the notebook does.
                lines = self._shell.InteractiveTB.structured_traceback(
                    type(exc), exc, exc.__traceback__, tb_offset=1
                )
        except Exception:
            lines = [f"{type(exc).__name__}: {exc}"]
        return strip_ansi("\n".join(line.rstrip("\n") for line in lines)).strip("\n")
