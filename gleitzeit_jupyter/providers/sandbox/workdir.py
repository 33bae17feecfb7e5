"""A run's working directory inside the sandbox: files in before, files out after (stdlib only).

Runs inside the container, in the worker, as the run's own uid. Nothing here is trusted by the
kernel: it checks every name and size again (``files.py``). The checks here only keep a
mistaken request from writing outside the working directory.
"""

from __future__ import annotations

import base64
import glob
import os
from typing import Any

__all__ = ["collect", "enter", "receive"]


def enter() -> str:
    """A fresh private directory under /tmp (swept with the run's uid), made the cwd."""
    if os.path.basename(os.getcwd()).startswith("gz-run-"):
        return os.getcwd()  # a session keeps its directory between runs
    import tempfile

    path = tempfile.mkdtemp(prefix="gz-run-", dir="/tmp")
    os.chdir(path)
    return path


def _inside(root: str, name: str) -> str:
    if not name or "\x00" in name or os.path.isabs(name):
        raise ValueError(f"refused file name {name!r}")
    path = os.path.realpath(os.path.join(root, name))
    if not path.startswith(root.rstrip("/") + "/"):
        raise ValueError(f"refused file name {name!r}: outside the working directory")
    return path


def receive(files: Any) -> None:
    """Write ``{relative name: base64 text}`` into the working directory."""
    if not isinstance(files, dict):
        return
    root = os.path.realpath(os.getcwd())
    for name, data in files.items():
        path = _inside(root, str(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(data))


def collect(patterns: Any, max_files: int, max_bytes: int) -> tuple[dict[str, str], str | None]:
    """Regular files under the working directory matching ``patterns``, base64 encoded.

    Symbolic links are left out (one could point at anything the run can read). Returns the
    files and an error text when a cap was reached.
    """
    out: dict[str, str] = {}
    if not isinstance(patterns, list):
        return out, None
    root = os.path.realpath(os.getcwd())
    total = 0
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        for name in sorted(glob.glob(pattern, root_dir=root, recursive=True)):
            path = os.path.join(root, name)
            if name in out or os.path.islink(path) or not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            if len(out) >= max_files or total + size > max_bytes:
                return out, (
                    f"--download stopped at {len(out)} files, {total:,} bytes: over the"
                    f" limits of {max_files} files / {max_bytes:,} bytes"
                )
            with open(path, "rb") as fh:
                out[name] = base64.b64encode(fh.read()).decode("ascii")
            total += size
    return out, None
