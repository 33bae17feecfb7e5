"""The work behind ``%%sandbox``: send the cell (and variables) to the pool, show the run.

Plain functions over a runtime and the user namespace, so they are testable without magics.
"""

from __future__ import annotations

import re
import sys
from collections.abc import MutableMapping
from typing import Any

from IPython.display import publish_display_data

from ..hub.errors import NoResourceAvailable, ResourceFailed
from . import sandbox_files
from .render import (
    CellError,
    CellInterrupted,
    SandboxException,
    cell_error,
    plain_terminal,
    show_footer,
    terminal_safe,
)

__all__ = ["build_params", "reset_session", "run_cell", "show_result"]

DOCKER_HINT = "from the notebook: %config Gleitzeit.docker_host = 'unix:///path/docker.sock'"


def build_params(
    code: str,
    ns: MutableMapping[str, Any],
    *,
    timeout: float | None,
    session: str | None,
    inputs: list[str],
    outputs: list[str],
) -> dict[str, Any]:
    missing = [n for n in inputs if n not in ns]
    if missing:
        raise CellError(
            f"%%sandbox --in: no variable {', '.join(map(repr, missing))} in the notebook",
            kind="UsageError",
        )
    params: dict[str, Any] = {"code": code, "inputs": {n: ns[n] for n in inputs}}
    if outputs:
        params["returns"] = list(outputs)
    if timeout is not None:
        params["timeout"] = timeout
    if session:
        params["session"] = session
    return params


def _hint(exc: BaseException) -> str | None:
    if isinstance(exc, (ResourceFailed, NoResourceAvailable)) and "docker" in str(exc).lower():
        return DOCKER_HINT
    return None


def run_cell(
    rt: Any,
    code: str,
    ns: MutableMapping[str, Any],
    *,
    timeout: float | None = None,
    mem: str | None = None,
    network: bool | str = False,
    session: str | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    out_var: str | None = None,
    image: str | None = None,
    upload: list[str] | None = None,
    download: list[str] | None = None,
    footer: bool = True,
) -> None:
    if out_var is not None and not out_var.isidentifier():
        raise CellError(f"-o {out_var!r} is not a valid Python variable name", kind="UsageError")
    params = build_params(
        code, ns, timeout=timeout, session=session, inputs=inputs or [], outputs=outputs or []
    )
    sent = sandbox_files.collect_uploads(upload) if upload else {}
    if sent:
        params["files"] = sent
    if download:
        params["download"] = list(download)
    error: BaseException | None = None
    interrupted = False
    result: dict[str, Any] = {}
    streamed: set[str] = set()
    try:
        provider = rt.sandbox(image=image, mem=mem, network=network)
        if getattr(provider, "streams_output", False):
            result = _stream_run(rt, provider, params, streamed)
        else:
            result = rt.run(provider.execute("python/execute", params))
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        error = exc
    # Raised outside the except blocks so no library exception rides along as __context__.
    if interrupted:
        raise CellInterrupted("%%sandbox stopped; the sandbox run was killed") from None
    if error is not None:
        raise cell_error(error, context="%%sandbox", hint=_hint(error)) from None
    show_result(result, skip=streamed)
    _warn_once(result.get("warnings"))
    # Variables and files come back even when the run failed later on: what exists is returned.
    for name, value in (result.get("values") or {}).items():
        ns[name] = value
    received = result.get("files") or {}
    replaced = sandbox_files.save_downloads(received) if received else []
    moved = sandbox_files.summary(sent, received, bool(download), replaced)
    if moved:
        print(moved)
    if out_var:
        ns[out_var] = result
    if footer:
        show_footer(footer_text(result), kind="sandbox")
    err = result.get("error")
    if err:
        instance = result.get("instance")
        if result.get("timed_out"):
            raise CellError(f"%%sandbox: {err.get('evalue')} (instance {instance})", kind="Timeout")
        tb = str(err.get("traceback") or "").rstrip("\n")
        ename, evalue = str(err.get("ename") or "Error"), str(err.get("evalue") or "")
        lines = tb.splitlines() if tb else []
        raise SandboxException(ename, evalue, lines, instance, _missing_module_hint(ename, evalue))


_MISSING = re.compile(r"No module named '([A-Za-z0-9_.]+)'")


def _missing_module_hint(ename: str, evalue: str) -> str | None:
    m = _MISSING.search(evalue) if ename == "ModuleNotFoundError" else None
    if m is None:
        return None
    top = m.group(1).split(".")[0]
    return (
        f"hint: the sandbox image has no {top!r}; add it with %sandbox install {top}"
        " (the sandbox itself has no network, so pip inside cannot work)"
    )


def footer_text(result: dict[str, Any]) -> str:
    """instance · wall time · CPU time · peak memory, as measured outside the run."""
    parts = [str(result.get("instance") or "?")]
    for key, fmt in (
        ("duration_ms", "{:,.0f} ms"),
        ("cpu_ms", "cpu {:,.0f} ms"),
        ("peak_memory_mb", "peak {:,.0f} MiB"),
    ):
        value = result.get(key)
        if isinstance(value, (int, float)):
            parts.append(fmt.format(value))
    return "sandbox · " + " · ".join(parts)


# Warnings already shown in this kernel: a mismatch is said once, not under every cell.
_WARNED: set[str] = set()


def _warn_once(warnings: Any) -> None:
    for text in warnings if isinstance(warnings, list) else []:
        if isinstance(text, str) and text not in _WARNED:
            _WARNED.add(text)
            sys.stderr.write(f"gleitzeit warning: {text}\n")
            sys.stderr.flush()


def _stream_run(
    rt: Any, provider: Any, params: dict[str, Any], streamed: set[str]
) -> dict[str, Any]:
    """Run with output as it happens, for a provider that streams ``python/execute``.

    Protocol (``provider.streams_output = True``): chunks ``{"stdout": text}`` /
    ``{"stderr": text}`` while the code runs, then one ``{"done": True, **result}`` whose
    ``stdout``/``stderr`` repeat the whole text (not printed again here).
    """
    result: dict[str, Any] = {}
    clean = terminal_safe if plain_terminal() else str
    for chunk in rt.stream(lambda: provider.stream("python/execute", params)):
        if chunk.get("done"):
            result = chunk
            continue
        if isinstance(chunk.get("output"), dict):
            _publish(chunk["output"], clean)
            streamed.add("outputs")
            continue
        for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
            text = chunk.get(name)
            if text:
                stream.write(clean(text))
                stream.flush()
                streamed.add(name)
    return result


def show_result(result: dict[str, Any], skip: set[str] | frozenset[str] = frozenset()) -> None:
    """stdout/stderr into the cell's streams, then rich outputs, as a local cell would.

    ``skip`` names streams already shown while the code ran ("outputs": the first
    ``streamed_outputs`` outputs). In a terminal, text from the
    sandbox keeps its colours but no other control sequence (see ``terminal_safe``); a
    notebook renders only colours anyway. Rich outputs were sanitised by the provider.
    """
    clean = terminal_safe if plain_terminal() else str
    if result.get("stdout") and "stdout" not in skip:
        sys.stdout.write(clean(result["stdout"]))
        sys.stdout.flush()
    if result.get("stderr") and "stderr" not in skip:
        sys.stderr.write(clean(result["stderr"]))
        sys.stderr.flush()
    shown = result.get("streamed_outputs") if "outputs" in skip else 0
    for out in (result.get("outputs") or [])[shown if type(shown) is int else 0 :]:
        _publish(out, clean)


def _publish(out: Any, clean: Any) -> None:
    data = out.get("data") if isinstance(out, dict) else None
    if data:
        if isinstance(data.get("text/plain"), str):
            data = {**data, "text/plain": clean(data["text/plain"])}
        publish_display_data(data=data, metadata=out.get("metadata") or {})


def reset_session(rt: Any, session: str) -> None:
    error: BaseException | None = None
    try:
        provider = rt.sandbox()
        rt.run(provider.execute("python/reset", {"session": session}))
    except KeyboardInterrupt:
        raise CellInterrupted("%sandbox --reset was cancelled") from None
    except Exception as exc:
        error = exc
    if error is not None:
        raise cell_error(error, context="%sandbox --reset", hint=_hint(error)) from None
    print(f"sandbox session {session!r} reset")
