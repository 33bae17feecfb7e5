"""``%%llm --tools sandbox``: a ``python`` tool whose code runs in the sandbox pool.

A local code interpreter: the model writes code, the sandbox runs it (never the kernel), the
cell shows the run exactly as ``%%sandbox`` does (its display path is reused, not copied),
and the model reads back a capped text of what happened. The calls of one ``%%llm`` cell
share a sandbox session, so a variable defined in one step is there in the next; the session
is reset when the cell ends.
"""

from __future__ import annotations

import html
import secrets
import sys
from collections.abc import MutableMapping
from typing import Any

from IPython.display import display

from .llm_tools import Tool, ToolError, truncate
from .render import (
    CellError,
    CellInterrupted,
    SandboxException,
    plain_terminal,
    strip_ansi,
    terminal_safe,
)
from .sandbox_cell import run_cell

__all__ = ["MODEL_LIMIT", "result_text", "sandbox_tool"]

#: Characters of a run's output the model reads back; the cell shows all of it.
MODEL_LIMIT = 4000
_TRACEBACK_LINES = 12
#: Characters of the model's code shown in the cell.
_CODE_SHOWN = 10_000

_DESCRIPTION = (
    "Run Python 3 code in an isolated sandbox (no network, no access to the user's files) and"
    " get back its stdout, stderr, the value of the last expression and any error. Variables"
    " persist between calls in this answer. Use print() to see values."
)
_PARAMETERS = {
    "type": "object",
    "properties": {"code": {"type": "string", "description": "the Python code to run"}},
    "required": ["code"],
}


def sandbox_tool(rt: Any, *, timeout: float | None) -> Tool:
    """The ``python`` tool: each call is one ``%%sandbox`` run with the given ``timeout``."""
    session = f"llm-tools-{secrets.token_hex(4)}"
    used = False

    def run(arguments: dict[str, Any]) -> str:
        nonlocal used
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError("python needs 'code': the Python source to run, as a string")
        _show_code(code)
        box: dict[str, Any] = {}
        used = True
        try:
            run_cell(rt, code, box, timeout=timeout, session=session, out_var="run")
        except CellInterrupted:
            raise
        except (SandboxException, CellError) as exc:
            if "run" not in box:
                raise  # the run never happened (no docker, no container): not the model's
            _show_failure(exc)
        return result_text(box["run"])

    def close() -> None:
        if used:
            _reset(rt, session)

    return Tool(
        name="python",
        description=_DESCRIPTION,
        parameters=_PARAMETERS,
        run=run,
        kind="sandbox",
        close=close,
    )


def result_text(result: MutableMapping[str, Any]) -> str:
    """What the model reads of a sandbox run: its streams, results and error, capped."""
    parts: list[str] = []
    if result.get("stdout"):
        parts.append(f"stdout:\n{result['stdout']}")
    if result.get("stderr"):
        parts.append(f"stderr:\n{result['stderr']}")
    for out in result.get("outputs") or []:
        data = out.get("data") if isinstance(out, dict) else None
        if not isinstance(data, dict):
            continue
        if isinstance(data.get("text/plain"), str):
            parts.append(f"result:\n{data['text/plain']}")
        elif any(k.startswith("image/") for k in data):
            parts.append("result: [an image, shown to the user]")
    err = result.get("error")
    if isinstance(err, dict):
        if result.get("timed_out"):
            parts.append(f"error: {err.get('evalue') or 'the run timed out'}")
        else:
            tb = strip_ansi(str(err.get("traceback") or "")).rstrip().splitlines()
            head = f"error: {err.get('ename') or 'Error'}: {err.get('evalue') or ''}"
            tail = "\n".join(tb[-_TRACEBACK_LINES:])
            parts.append(f"{head}\n{tail}" if tail else head)
    text = "\n".join(p.rstrip("\n") for p in parts) or "(the code ran and printed nothing)"
    return truncate(text, MODEL_LIMIT)


def _show_code(code: str) -> None:
    # The sandbox runs all of it; the cell (and the saved notebook) shows a readable part.
    code = truncate(code, _CODE_SHOWN)
    if plain_terminal():
        print(f"python ⟶ sandbox\n{terminal_safe(code.rstrip())}")
        return
    display(
        {
            "text/plain": f"python ⟶ sandbox\n{code}",
            "text/html": (
                '<div class="gz-tool-call"><span style="opacity:0.6">python ⟶ sandbox</span>'
                f"<pre><code>{html.escape(code)}</code></pre></div>"
            ),
        },
        metadata={"gleitzeit": {"tool_call": "python"}},
        raw=True,
    )


def _show_failure(exc: BaseException) -> None:
    # What %%sandbox would show as the cell's error, shown here while the loop goes on.
    render = getattr(exc, "_render_traceback_", None)
    lines = render() if callable(render) else [str(exc)]
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def _reset(rt: Any, session: str) -> None:
    try:
        provider = rt.sandbox()
        rt.run(provider.execute("python/reset", {"session": session}))
    except Exception:
        pass  # best effort: the answer is in; a failed reset must not turn it into an error
