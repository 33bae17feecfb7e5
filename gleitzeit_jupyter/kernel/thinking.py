"""``%%llm --think``: a thinking model's reasoning, shown apart from its answer and kept.

The reasoning streams into its own output above the answer: a collapsed ``<details>`` block
in a notebook, dimmed text in a terminal. The answer's output is exactly what it would be
without ``--think``. A text answer stored with ``-o`` is an :class:`Answer`: a ``str`` (equal
to, and usable as, the plain text) whose ``.thinking`` holds the reasoning. JSON and
``--schema`` answers keep their own type, so there the reasoning stays in the cell's output.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any

from IPython.display import display

from .render import plain_terminal, terminal_safe

__all__ = ["Answer", "ThinkingDisplay", "thinking_bundle", "thinking_of", "with_thinking"]

_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


class Answer(str):
    """A text answer with the model's reasoning on ``.thinking``.

    A ``str`` subclass rather than a wrapper: code that used the plain answer keeps working,
    and ``answer.thinking`` is there when wanted. String methods return plain ``str``.
    """

    thinking: str

    def __new__(cls, text: str, thinking: str = "") -> Answer:
        obj = super().__new__(cls, text)
        obj.thinking = thinking
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (Answer, (str(self), self.thinking))


def with_thinking(value: Any, thinking: str) -> Any:
    """The value ``-o`` stores: text answers carry the reasoning, others stay as they are."""
    if thinking and isinstance(value, str):
        return Answer(value, thinking)
    return value


def thinking_of(chunk: dict[str, Any]) -> str:
    """The reasoning text in one Ollama chunk (``/api/generate``: top level; chat: message)."""
    text = chunk.get("thinking")
    if isinstance(text, str):
        return text
    msg = chunk.get("message")
    if isinstance(msg, dict) and isinstance(msg.get("thinking"), str):
        return str(msg["thinking"])
    return ""


def thinking_bundle(text: str, done: bool = True) -> dict[str, str]:
    """The collapsed section. The reasoning is model output, shown as text: HTML-escaped, and
    one HTML block without a blank line, so Markdown leaves it alone too (an image in it
    would be fetched on display; emphasis and headings would restyle it)."""
    label = "thinking" if done else "thinking…"
    lines = [html.escape(line.rstrip()) for line in text.strip("\n").split("\n")]
    body = "<br>\n".join(lines)
    section = f"<details>\n<summary>{label}</summary>\n<div>\n{body}\n</div>\n</details>\n"
    return {
        "text/markdown": section,
        "text/plain": f"[{label}]\n{text}",
    }


class ThinkingDisplay:
    """The reasoning as it streams, updated in place at most every ``interval`` s.

    Created before the answer's display, so it sits above it; it stays an empty output
    until reasoning arrives, so a model that did not think shows no section.
    """

    def __init__(self, interval: float = 0.1, terminal: bool | None = None) -> None:
        self.interval = interval
        self.text = ""
        self.done = False
        self.terminal = plain_terminal() if terminal is None else terminal
        self._last = 0.0
        self._handle = (
            None if self.terminal else display({"text/plain": ""}, raw=True, display_id=True)
        )

    def append(self, piece: str) -> None:
        if not piece or self.done:
            return
        self.text += piece
        if self.terminal:
            sys.stdout.write(f"{_DIM}{terminal_safe(piece)}{_RESET}")
            sys.stdout.flush()
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._update(done=False)
            self._last = now

    def finish(self) -> None:
        """The reasoning is complete (the answer started, or the call ended)."""
        if self.done:
            return
        self.done = True
        if self.terminal:
            if self.text:
                sys.stdout.write("\n")
            return
        if self.text:
            self._update(done=True)

    def _update(self, done: bool) -> None:
        if self._handle is not None:
            self._handle.update(thinking_bundle(self.text, done), raw=True)


def show_thinking(text: str) -> None:
    """A finished call's reasoning (non-streamed): the collapsed section, or dimmed text."""
    if not text:
        return
    if plain_terminal():
        print(f"{_DIM}{terminal_safe(text)}{_RESET}")
    else:
        display(thinking_bundle(text), raw=True)
