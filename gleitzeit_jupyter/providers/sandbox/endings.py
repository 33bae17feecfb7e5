"""How a run ended, as the supervisor saw it (stdlib only; runs inside the container).

A worker's own report is reduced to what user code may decide (its outputs, values, error
and ``sys.exit`` code); whether the run was killed, ran out of memory or died is taken from
the worker's exit status and the cgroup's OOM counter, never from the report.
"""

from __future__ import annotations

import os
import signal
from typing import Any

try:  # on the host this is a normal package module
    from .codec import attachment_refs
except ImportError:  # inside the container the bootstrap has installed it
    from gleitzeit_codec import attachment_refs  # type: ignore[import-not-found,no-redef]

__all__ = ["died", "failed", "from_worker"]


def failed(ename: str, evalue: str) -> dict[str, Any]:
    return {"exit_code": 1, "error": {"ename": ename, "evalue": evalue, "traceback": ""}}


def from_worker(frame: dict[str, Any], returns: object = ()) -> dict[str, Any]:
    """The parts of a worker's result the supervisor passes on, each of the expected type.

    Whatever else the frame claims (``oom``, ``killed``, ``timed_out``, ...) is dropped: how a
    run ended is decided here and on the host, from what was observed. So are values for
    names the run was not asked for (``returns``): they would only cost the reply its room.
    """
    code = frame.get("exit_code")
    error = frame.get("error")
    if error is not None and not (
        isinstance(error, dict) and all(isinstance(v, str) for v in error.values())
    ):
        return failed("ProtocolError", "the run sent a malformed error")
    out: dict[str, Any] = {
        "exit_code": code if type(code) is int and -255 <= code <= 255 else 1,
        "error": error,
        "outputs": frame.get("outputs") if isinstance(frame.get("outputs"), list) else [],
        "values": {},
    }
    values = frame.get("values")
    if isinstance(values, dict) and isinstance(returns, list):
        out["values"] = {k: values[k] for k in returns if isinstance(k, str) and k in values}
    attachments = frame.get("attachments")
    if isinstance(attachments, list) and attachments:
        # Only the bytes of values passed on travel on (indices kept: the rest go empty).
        keep = {i for enc in out["values"].values() for i in attachment_refs(enc)}
        out["attachments"] = [a if i in keep else b"" for i, a in enumerate(attachments)]
    if isinstance(frame.get("files"), dict):
        out["files"] = frame["files"]
    if isinstance(frame.get("imported"), list):
        out["imported"] = frame["imported"]
    return out


_MOVING = {
    "inputs": "receiving the --in values",
    "values": "sending the --out values back",
}


def died(status: int, killed: bool, oom_grew: bool, phase: str | None = None) -> dict[str, Any]:
    """The result of a worker that exited without a report, from its wait status.

    ``phase`` ("inputs", "values") says the worker was moving values when it died; only the
    wording of an out-of-memory error depends on it."""
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = 128 + sig if sig else os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1
    oom = sig == signal.SIGKILL and not killed and oom_grew
    if killed:
        err = ("Killed", "the run was stopped by the host")
    elif oom and phase in _MOVING:
        err = (
            "MemoryError",
            f"out of memory while {_MOVING[phase]}: the transfer, not the cell's code, needed"
            " more than the sandbox memory limit; run with a larger one, e.g. --mem 2g",
        )
    elif oom:
        err = (
            "MemoryError",
            "out of memory: the run exceeded the sandbox memory limit and was killed"
            " (a larger limit: --mem 2g)",
        )
    elif sig:
        err = ("Killed", f"the worker was killed by signal {sig}")
    else:
        err = ("SystemExit", f"the worker exited with code {code} without a result")
    return {
        "exit_code": code,
        "oom": oom,
        "killed": killed,
        "error": {"ename": err[0], "evalue": err[1], "traceback": ""},
    }
