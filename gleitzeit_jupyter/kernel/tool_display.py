"""How ``%%llm --tools`` shows a call of a kernel function: one line, updated in place,
first the call as it starts, then its result (the sandbox's ``python`` tool shows its run
the way ``%%sandbox`` does instead)."""

from __future__ import annotations

import html
from typing import Any

from IPython.display import display

from .llm_tools import describe_value
from .render import plain_terminal, terminal_safe

__all__ = ["CallView", "call_text"]

# What the cell shows of arguments and results; the model gets more (see MODEL_LIMIT).
SHOWN = 300


def call_text(name: str, arguments: Any) -> str:
    """``name(a=1, b='x')``, each value cut short and the whole cut at :data:`SHOWN`
    characters with the number of arguments said (a hostile call may send thousands)."""
    if isinstance(arguments, dict):
        inner = ", ".join(
            f"{describe_value(k, 40)}={describe_value(v, 80)!r}"
            if isinstance(v, str)
            else f"{describe_value(k, 40)}={describe_value(v, 80)}"
            for k, v in arguments.items()
        )
        if len(inner) > SHOWN:
            inner = f"{inner[:SHOWN]}… [{len(arguments):,} arguments]"
    else:
        inner = describe_value(arguments, SHOWN)
    return f"{describe_value(name, 80)}({inner})"  # a tool name the model made up, too


class CallView:
    """One line per call, updated in place: the call as it starts, then its result."""

    def __init__(self, name: str, arguments: Any) -> None:
        self.call = call_text(name, arguments)
        self.terminal = plain_terminal()
        self.handle = None
        if self.terminal:
            # What the model chose goes to a terminal as %%sandbox output does: colours
            # at most, other control sequences shown as text.
            print(terminal_safe(f"tool {self.call} …"), flush=True)
        else:
            self.handle = display(
                self._bundle("…", False),
                raw=True,
                display_id=True,
                metadata={"gleitzeit": {"tool_call": name}},
            )

    def _bundle(self, result: str, error: bool) -> dict[str, str]:
        arrow = "⟶ error:" if error else "⟶"
        plain = f"tool {self.call} {arrow} {result}"
        colour = "#b3261e" if error else "inherit"
        return {
            "text/plain": plain,
            "text/html": (
                '<div class="gz-tool-call" style="font-family:monospace">'
                f'<span style="opacity:0.6">tool</span> {html.escape(self.call)} '
                f'<span style="color:{colour}">{html.escape(arrow)}</span> '
                f"{html.escape(result)}</div>"
            ),
        }

    def done(self, text: str, error: bool) -> None:
        shown = text.removeprefix("error: ") if error else text
        shown = describe_value(shown, SHOWN)
        if self.terminal:
            print(terminal_safe(f"  {'⟶ error:' if error else '⟶'} {shown}"), flush=True)
        elif self.handle is not None:
            self.handle.update(self._bundle(shown, error), raw=True)
