"""CPU time and peak memory of a run's worker, read by the supervisor from /proc (stdlib only).

The numbers come from the kernel's accounting of the worker process, so user code cannot
claim other figures for itself; it can only hide work in processes it does not wait for.
"""

from __future__ import annotations

import os
import sys

__all__ = ["cpu_ms", "from_rusage", "installed_versions", "peak_memory_mb"]

_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float | None:
    """User + system CPU time of ``pid`` and of the children it waited for, in ms."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # Fields after the command name, which may itself hold spaces and parentheses.
            fields = fh.read().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) * _TICK_MS
    except (OSError, IndexError, ValueError):
        return None


def peak_memory_mb(pid: int) -> float | None:
    """Peak resident memory of ``pid`` (VmHWM), in MiB; shared library pages included."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, IndexError, ValueError):
        return None
    return None


def from_rusage(ru: os.struct_rusage | None) -> tuple[float, float] | None:  # type: ignore[name-defined]
    """(CPU ms, peak MiB) of a reaped process, from what ``wait4`` returned for it."""
    if ru is None:
        return None
    return (ru.ru_utime + ru.ru_stime) * 1000.0, ru.ru_maxrss / 1024.0


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Versions of the installed distributions ``names``, from their metadata directories'
    names (``numpy-1.24.2.egg-info``, ``pandas-3.0.1.dist-info``): nothing is imported."""
    found: dict[str, str] = {}
    for path in sys.path:
        try:
            entries = os.listdir(path or ".")
        except OSError:
            continue
        for entry in entries:
            stem, _, kind = entry.rpartition(".")
            if kind not in ("dist-info", "egg-info") or "-" not in stem:
                continue
            name, _, version = stem.partition("-")
            name = name.lower().replace("_", "-")
            if name in names and name not in found:
                found[name] = version.split("-")[0]
    return found
