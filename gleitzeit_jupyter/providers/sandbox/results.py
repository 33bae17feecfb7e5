"""Shaping the supervisor's reply into a run's result, treating the reply as untrusted.

The reply carries what user code produced (outputs, values, its exception), and user code
may have written it itself. So the reply is parsed strictly: each field must have its type,
values are taken only for the names the caller asked for, Arrow only when it was negotiated,
every size has a limit, and how the run ended (timed out, killed, out of memory, duration) is
what the supervisor and this host observed, never what the run says about itself.
"""

from __future__ import annotations

import json
import keyword
import time
from dataclasses import dataclass, field
from typing import Any

from .codec import attachment_refs, decode_value
from .files import FileLimits, unpack_downloads
from .outputs import OutputLimits, safe_outputs, utf8_text

__all__ = ["ResultLimits", "check_names", "shape_result"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class ResultLimits:
    """Caps on what one run may bring back (each value, all values, each output, outputs)."""

    max_output: int = MiB
    max_value_bytes: int = 32 * MiB
    max_values_bytes: int = 64 * MiB
    #: Widest DataFrame a run may send or receive; a reply naming more is refused unread.
    max_columns: int = 10_000
    outputs: OutputLimits = field(default_factory=OutputLimits)
    files: FileLimits = field(default_factory=FileLimits)

    @property
    def max_reply(self) -> int:
        """Largest reply frame worth reading: every cap full, plus room for framing."""
        # JSON escaping can inflate text (a control character takes six bytes).
        payload = self.max_values_bytes + self.outputs.max_total_bytes
        return 2 * payload + 12 * self.max_output + MiB

    @property
    def max_reply_with_files(self) -> int:
        """``max_reply`` of a run that downloads files: their base64 text on top. Only such a
        run gets the larger limit, so a reply without files is held to the smaller one."""
        return self.max_reply + 2 * self.files.max_bytes


def check_names(names: Any) -> list[str]:
    """The requested ``values`` as a list of names, or ValueError naming the bad one.

    Dunder names are refused: a value for ``__builtins__`` or ``__name__`` would break the
    namespace it lands in.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"values must be a list of names, not {type(names).__name__}")
    for name in names:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"{name!r} is not a valid variable name")
        if name.startswith("__") and name.endswith("__"):
            raise ValueError(f"{name!r} is a reserved (dunder) name and cannot be returned")
    return list(dict.fromkeys(names))


def _bad(part: str) -> dict[str, str]:
    return {"ename": "ProtocolError", "evalue": f"the run sent a malformed {part}", "traceback": ""}


def _error(raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k, ""), str) for k in ("ename", "evalue", "traceback")
    ):
        return _bad("error")
    return {
        "ename": utf8_text(str(raw.get("ename") or "Error")[:200]),
        "evalue": utf8_text(str(raw.get("evalue") or "")[:MiB]),
        "traceback": utf8_text(str(raw.get("traceback") or "")[:MiB]),
    }


def _size(enc: dict[str, Any], attachments: list[Any]) -> int:
    """Encoded size of a value: its JSON and the attachments it names (each once)."""
    try:
        size = len(json.dumps(enc, allow_nan=True))
    except (TypeError, ValueError, RecursionError):
        return 1 << 62
    for i in set(attachment_refs(enc)):
        size += len(attachments[i]) if 0 <= i < len(attachments) else 0
    return size


def _values(
    raw: Any, requested: list[str], arrow: bool, limits: ResultLimits, attachments: Any = None
) -> tuple[dict[str, Any], dict[str, str] | None]:
    values: dict[str, Any] = {}
    error: dict[str, str] | None = None
    if raw is None:
        return values, None
    if not isinstance(raw, dict):
        return values, _bad("values")
    # Only the frame decoder puts bytes here (JSON cannot): a list of bytearrays.
    attachments = attachments if isinstance(attachments, list) else []
    total = 0
    used: set[int] = set()  # attachments already made into a value
    for name in requested:  # only what was asked for, whatever else the reply holds
        if name not in raw:
            continue
        enc = raw[name]
        refs = attachment_refs(enc)
        # A value owns its attachment's bytes (arrays are built on them without a copy): one
        # named twice would make objects that change together.
        if len(set(refs)) != len(refs) or used.intersection(refs):
            error = error or {
                "ename": "CodecError",
                "evalue": f"{name}: names an attachment already used (a forged reply)",
                "traceback": "",
            }
            continue
        used.update(refs)
        size = _size(enc, attachments)
        total += size
        if size > limits.max_value_bytes or total > limits.max_values_bytes:
            which = "max_value_bytes" if size > limits.max_value_bytes else "max_values_bytes"
            error = error or {
                "ename": "ValueTooLarge",
                "evalue": f"{name}: {size:,} bytes encoded, over the limit ({which})",
                "traceback": "",
            }
            continue
        try:
            values[name] = decode_value(
                enc, arrow=arrow, attachments=attachments, max_columns=limits.max_columns
            )
        except Exception as exc:
            error = error or {"ename": "CodecError", "evalue": f"{name}: {exc}", "traceback": ""}
    return values, error


def _text(raw: Any, cap: int) -> str:
    if not isinstance(raw, str):
        return ""
    if len(raw) <= cap + 200:  # the supervisor's own truncation marker fits in the slack
        return raw
    return raw[:cap] + f"\n[gleitzeit: output truncated, {len(raw) - cap} more characters]\n"


def _measure(raw: Any, cap: float) -> float | None:
    """A figure the supervisor measured: a finite number within ``0..cap``, else None."""
    if type(raw) not in (int, float) or not 0 <= raw <= cap:
        return None
    return float(raw)


def shape_result(
    raw: dict[str, Any],
    *,
    timeout: float,
    started: float,
    timed_out: bool = False,
    requested: list[str] | None = None,
    arrow: bool = False,
    limits: ResultLimits | None = None,
    download: list[str] | None = None,
) -> dict[str, Any]:
    """The public result of a run from the supervisor's reply.

    ``timed_out`` is the host's own observation (its deadline fired); ``requested`` the
    names the caller asked values for; ``arrow`` whether Arrow was negotiated for this run.
    """
    limits = limits or ResultLimits()
    error = _error(raw.get("error"))
    if timed_out:
        error = {
            "ename": "TimeoutError",
            "evalue": f"the run exceeded its {timeout:g} s timeout and was stopped",
            "traceback": (error or {}).get("traceback", ""),
        }
    values, value_error = _values(
        raw.get("values"), requested or [], arrow, limits, raw.pop("attachments", None)
    )
    error = error or value_error
    files, files_error = unpack_downloads(raw.get("files"), limits.files, download)
    error = error or files_error
    exit_code = raw.get("exit_code")
    if type(exit_code) is not int or not -255 <= exit_code <= 255:
        exit_code = 1 if error else 0
    if error and exit_code == 0:
        exit_code = 1
    return {
        "stdout": _text(raw.get("stdout"), limits.max_output),
        "stderr": _text(raw.get("stderr"), limits.max_output),
        "exit_code": exit_code,
        "error": error,
        "timed_out": timed_out,
        "oom": raw.get("oom") is True,
        "outputs": safe_outputs(raw.get("outputs"), limits.outputs),
        "values": values,
        "files": files,
        "duration_ms": (time.perf_counter() - started) * 1000.0,
        "cpu_ms": _measure(raw.get("cpu_ms"), 1e12),
        "peak_memory_mb": _measure(raw.get("peak_memory_mb"), 1e9),
    }
