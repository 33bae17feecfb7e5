"""What the magics put in a cell's output: one-line errors, streaming displays, footers."""

from __future__ import annotations

import html
import os
import re
import sys
import time
import traceback
from typing import Any

from IPython.display import display

from ..hub.errors import HubError, NoResourceAvailable

__all__ = [
    "CellError",
    "CellInterrupted",
    "SandboxException",
    "StreamingDisplay",
    "cell_error",
    "footer_text",
    "show_footer",
    "terminal_safe",
]

_RED = "\x1b[0;31m"
_RESET = "\x1b[0m"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


_SGR = re.compile(r"\x1b\[[0-9;:]*m")
# C0 controls but tab and newline, DEL, and the C1 controls (\x9b is a one-byte CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def terminal_safe(text: str) -> str:
    """Text from the sandbox as a terminal may print it: colours (SGR) stay, every other
    control sequence is shown as text (``\\x1b]52;...`` would set the clipboard, others
    retitle the window or move the cursor to overwrite lines), and a lone carriage return
    becomes a newline, so no output can hide behind a later one."""
    parts = _SGR.split(text.replace("\r\n", "\n").replace("\r", "\n"))
    colours = _SGR.findall(text)
    out: list[str] = []
    for i, part in enumerate(parts):
        out.append(_CONTROL.sub(_escape, part))
        if i < len(colours):
            out.append(colours[i])
    return "".join(out)


class _NoContext:
    """Hide ``__context__`` from IPython.

    IPython prints a native traceback, ignoring ``_render_traceback_``, when an exception's
    ``__context__`` chain holds an ExceptionGroup (asyncio.TaskGroup raises those); a one-line
    error raised while handling a library error would then show the library's traceback.
    The original error stays reachable as ``cause``.
    """

    @property  # type: ignore[misc]
    def __context__(self) -> None:  # type: ignore[override]
        return None

    @__context__.setter
    def __context__(self, value: object) -> None:
        pass


class CellError(_NoContext, HubError):
    """What a magic raises for the notebook: shown as exactly one line, no traceback.

    It is a :class:`HubError` so ``except HubError`` around ``x = %llm ...`` still works;
    ``cause`` is the original error (``%tb`` is not useful here, GLEITZEIT_DEBUG=1 is).
    """

    def __init__(self, line: str, *, kind: str = "gleitzeit", cause: BaseException | None = None):
        super().__init__(line)
        self.kind = kind
        self.cause = cause

    def _render_traceback_(self) -> list[str]:
        lines = [f"{_RED}{self.kind}{_RESET}: {self.message}"]
        if self.cause is not None and os.environ.get("GLEITZEIT_DEBUG"):
            lines += "".join(traceback.format_exception(self.cause)).splitlines()
        return lines


class CellInterrupted(_NoContext, KeyboardInterrupt):
    """The cell was interrupted: one line, and the cell still counts as interrupted (it is a
    KeyboardInterrupt, so a loop calling the magic stops too)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def _render_traceback_(self) -> list[str]:
        return [f"{_RED}Interrupted{_RESET}: {self.what}"]


class SandboxException(_NoContext, HubError):
    """An exception raised by the user's code inside the sandbox, shown like a local one."""

    def __init__(
        self,
        ename: str,
        evalue: str,
        tb_lines: list[str],
        instance: str | None,
        hint: str | None = None,
    ):
        super().__init__(f"{ename}: {evalue}", instance=instance)
        self.ename = ename
        self.evalue = evalue
        self.tb_lines = tb_lines
        self.sandbox_hint = hint  # ours, not the sandbox's: shown after its traceback

    def _render_traceback_(self) -> list[str]:
        where = f" {self.instance}" if self.instance else ""
        head = f"{_RED}--- raised in the sandbox{where} ---{_RESET}"
        # Written by code in the sandbox: colours may stay, nothing else reaches a terminal.
        body = [terminal_safe(line) for line in self.tb_lines] or [
            terminal_safe(f"{self.ename}: {self.evalue}")
        ]
        last = strip_ansi(body[-1]) if body else ""
        if not last.startswith(self.ename):
            body.append(f"{_RED}{terminal_safe(self.ename)}{_RESET}: {terminal_safe(self.evalue)}")
        tail = [self.sandbox_hint] if self.sandbox_hint else []
        return [head, *body, *tail]


# One class per library error type, made on first use: CellError's one-line display, and
# still an instance of what the library raised, so `except UserError:` around a magic (or
# around code calling the functions behind it) catches what the documentation promises.
_TYPED: dict[type[HubError], type[CellError]] = {}
# The one-line error's own fields; everything else the original carried is copied over.
_OWN_FIELDS = frozenset({"message", "hint", "kind", "cause"})


def _typed_class(kind: type[BaseException]) -> type[CellError]:
    if not issubclass(kind, HubError) or issubclass(kind, (CellError, _NoContext)):
        return CellError
    cls = _TYPED.get(kind)
    if cls is None:
        cls = type(kind.__name__, (CellError, kind), {"__module__": __name__})
        _TYPED[kind] = cls
    return cls


def _typed_cell_error(exc: BaseException, text: str, kind: str) -> CellError:
    try:
        err = _typed_class(type(exc))(text, kind=kind, cause=exc)
    except TypeError:
        # An error type whose constructor wants more than a message: still one line.
        return CellError(text, kind=kind, cause=exc)
    for name, value in vars(exc).items():
        if name not in _OWN_FIELDS:
            setattr(err, name, value)
    return err


def cell_error(exc: BaseException, *, context: str = "", hint: str | None = None) -> CellError:
    """Turn any error from the runtime or a provider into one line for the user.

    ``context`` says what was being done ("%%llm", "%%sandbox"); ``hint`` (what the kernel
    knows and the provider does not, e.g. how to configure hosts) is appended. For a
    :class:`HubError` the result is also an instance of the original's type.
    """
    if isinstance(exc, CellError):
        return exc
    if isinstance(exc, HubError):
        text = _clipped(str(exc))
        if hint:
            text = f"{text}; {hint}"
        kind = type(exc).__name__
    else:
        # Not one of ours: a bug or an unexpected library failure. Still one line, but say so.
        text = f"internal error {type(exc).__name__}: {_clipped(str(exc))}"
        text += " (set GLEITZEIT_DEBUG=1 to see the traceback, and please report it)"
        kind = "gleitzeit"
    text = " ".join(text.split())  # one line, whatever the message held
    if context:
        text = f"{context}: {text}"
    return _typed_cell_error(exc, text, kind)


#: Longest message a cell shows: a server may send a megabyte of error text.
MESSAGE_MAX = 1000


def _clipped(message: str) -> str:
    if len(message) <= MESSAGE_MAX:
        return message
    return f"{message[:MESSAGE_MAX]}… ({len(message) - MESSAGE_MAX:,} more characters)"


def no_ollama_hint(hosts: list[str]) -> str:
    where = ", ".join(hosts) if hosts else "(no hosts configured)"
    return (
        f"looked at {where}; start Ollama there or set a host with"
        " %config Gleitzeit.ollama_hosts = ['http://HOST:11434'] (or $OLLAMA_HOST,"
        " $GLEITZEIT_OLLAMA_HOSTS), or %gleitzeit add ollama URL"
    )


def hint_for(exc: BaseException, *, hosts: list[str] | None = None) -> str | None:
    if isinstance(exc, NoResourceAvailable) and hosts is not None:
        return no_ollama_hint(hosts)
    return None


class StreamingDisplay:
    """A display handle updated in place as text arrives, at most every ``interval`` s.

    Updating per token would flood the front end (hundreds of messages a second); updates
    are coalesced and the final text is always shown.

    In terminal IPython a display cannot be updated in place (each update would print the
    whole text again), so there the pieces are written to stdout as they arrive instead.
    """

    def __init__(
        self, fmt: str = "markdown", interval: float = 0.1, terminal: bool | None = None
    ) -> None:
        self.fmt = fmt
        self.interval = interval
        self.text = ""
        self.updates = 0
        self._last = 0.0
        self._dirty = False
        self.terminal = _plain_terminal() if terminal is None else terminal
        self._handle = (
            None if self.terminal else display(self._bundle(""), raw=True, display_id=True)
        )

    def _bundle(self, text: str) -> dict[str, str]:
        if self.fmt == "text":
            return {"text/plain": text}
        if self.fmt == "code":
            return {"text/markdown": f"```python\n{text}\n```", "text/plain": text}
        if self.fmt == "json":
            return {"text/plain": text}
        return {"text/markdown": text, "text/plain": text}

    def append(self, piece: str) -> None:
        if not piece:
            return
        self.text += piece
        if self.terminal:
            sys.stdout.write(terminal_safe(piece))  # model output: no control sequences
            sys.stdout.flush()
            return
        self._dirty = True
        now = time.monotonic()
        if now - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self._dirty and self._handle is not None:
            self._handle.update(self._bundle(self.text), raw=True)
            self.updates += 1
            self._last = time.monotonic()
            self._dirty = False

    def finish(self, bundle: dict[str, Any] | None = None) -> None:
        """Final render: the given MIME bundle, or the text in this display's format."""
        if self.terminal:
            if self.text and not self.text.endswith("\n"):
                sys.stdout.write("\n")
            return
        if self._handle is None:
            return
        self._handle.update(bundle if bundle is not None else self._bundle(self.text), raw=True)
        self.updates += 1
        self._dirty = False


def plain_terminal() -> bool:
    """True in terminal IPython (its outputs go straight to a terminal)."""
    return _plain_terminal()


def _plain_terminal() -> bool:
    try:
        from IPython import get_ipython
        from IPython.core.displaypub import DisplayPublisher
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    # Kernels and output capturing replace the publisher with one that keeps outputs apart;
    # only the terminal's plain publisher prints every update in full.
    return shell is not None and type(shell.display_pub) is DisplayPublisher


def tokens_per_second(result: dict[str, Any]) -> float | None:
    tps = result.get("tokens_per_s")
    if isinstance(tps, (int, float)) and tps > 0:
        return float(tps)
    count, dur = result.get("eval_count"), result.get("eval_duration")
    if isinstance(count, (int, float)) and isinstance(dur, (int, float)) and dur > 0:
        return float(count) / (float(dur) / 1e9)
    return None


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value >= 0 else None


def token_counts(result: dict[str, Any]) -> tuple[int | None, int | None]:
    """(prompt tokens, completion tokens) as Ollama reports them on a finished call."""
    return _count(result.get("prompt_eval_count")), _count(result.get("eval_count"))


def footer_text(
    *,
    model: str | None,
    instance: str | None,
    latency_ms: float | None,
    tokens_per_s: float | None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    first_token_ms: float | None = None,
) -> str:
    parts = [model or "?", instance or "?"]
    if latency_ms is not None:
        parts.append(f"{latency_ms:,.0f} ms")
    if prompt_tokens is not None or completion_tokens is not None:
        sent = "?" if prompt_tokens is None else f"{prompt_tokens:,}"
        got = "?" if completion_tokens is None else f"{completion_tokens:,}"
        parts.append(f"{sent} → {got} tokens")
    if first_token_ms is not None:
        parts.append(f"first token {first_token_ms:,.0f} ms")
    if tokens_per_s is not None:
        parts.append(f"{tokens_per_s:.1f} tok/s")
    return " · ".join(parts)


def show_footer(text: str, kind: str | None = None) -> None:
    """A dim one-line footer; ``kind`` tags it in the output's metadata (``gleitzeit.footer``)
    so front ends and tools can tell it from what the cell itself displayed."""
    display(
        {
            "text/plain": text,
            "text/html": f'<div style="font-size:smaller;opacity:0.6">{html.escape(text)}</div>',
        },
        metadata={"gleitzeit": {"footer": kind}} if kind else None,
        raw=True,
    )
