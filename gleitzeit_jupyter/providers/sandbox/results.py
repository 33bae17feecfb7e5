"""Shaping the supervisor's reply into a run's result, treating the reply as untrusted."""

from __future__ import annotations

import time
from typing import Any

from .codec import decode_value

__all__ = ["shape_result"]


def shape_result(raw: dict[str, Any], timeout: float, started: float) -> dict[str, Any]:
    """The public result of a run from the supervisor reply (values decoded safely)."""
    timed_out = bool(raw.get("timed_out"))
    error = raw.get("error")
    if timed_out:
        error = {
            "ename": "TimeoutError",
            "evalue": f"the run exceeded its {timeout:g} s timeout and was stopped",
            "traceback": (error or {}).get("traceback", ""),
        }
    values: dict[str, Any] = {}
    for name, enc in (raw.get("values") or {}).items():
        try:
            values[name] = decode_value(enc)
        except Exception as exc:
            error = error or {
                "ename": "CodecError",
                "evalue": f"{name}: {exc}",
                "traceback": "",
            }
    exit_code = raw.get("exit_code")
    if not isinstance(error, dict):
        error = None if error is None else _bad_result("error")
    return {
        "stdout": str(raw.get("stdout", "")),
        "stderr": str(raw.get("stderr", "")),
        "exit_code": exit_code if type(exit_code) is int else (1 if error else 0),
        "error": error,
        "timed_out": timed_out,
        "oom": bool(raw.get("oom")),
        "outputs": _safe_outputs(raw.get("outputs")),
        "values": values,
        "duration_ms": (time.perf_counter() - started) * 1000.0,
    }


# User code can write its own result frame (it owns its worker's pipes), so everything but
# stdout/stderr is checked here: a forged result must never break the call path (and trip the
# breaker), nor carry a MIME type a front end would execute (application/javascript).
_MIME_ALLOWED = frozenset(
    {
        "text/plain",
        "text/html",
        "text/markdown",
        "text/latex",
        "image/png",
        "image/jpeg",
        "image/svg+xml",
        "application/json",
    }
)


def _bad_result(part: str) -> dict[str, str]:
    return {"ename": "ProtocolError", "evalue": f"the run sent a malformed {part}", "traceback": ""}


def _safe_outputs(outputs: Any) -> list[dict[str, Any]]:
    safe: list[dict[str, Any]] = []
    for out in outputs if isinstance(outputs, list) else []:
        data = out.get("data") if isinstance(out, dict) else None
        if not isinstance(data, dict):
            continue
        kept = {k: v for k, v in data.items() if k in _MIME_ALLOWED and isinstance(v, str)}
        if kept:
            kind = out.get("type")
            safe.append(
                {"type": kind if kind == "execute_result" else "display_data", "data": kept}
            )
    return safe
