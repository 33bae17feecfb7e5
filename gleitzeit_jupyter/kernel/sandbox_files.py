"""``%%sandbox --upload`` / ``--download``: files between the kernel's cwd and a run's.

Uploads are read from the kernel's working directory under their relative names; symbolic
links, absolute paths and anything resolving outside that directory are refused. Downloads
come from the container (hostile): each name is checked again here and written without
following links, so a reply cannot place a file anywhere but under the working directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterable, Sequence

from ..providers.sandbox.files import FileLimits, safe_name
from .render import CellError

__all__ = ["collect_uploads", "save_downloads", "summary"]


def _refuse(why: str) -> CellError:
    return CellError(f"%%sandbox --upload: {why}", kind="UsageError")


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _walk(root: str, rel: str) -> Iterable[str]:
    path = os.path.join(root, rel)
    if os.path.islink(path):
        raise _refuse(f"{rel} is a symbolic link")
    if os.path.isfile(path):
        yield rel
        return
    if not os.path.isdir(path):
        raise _refuse(f"{rel} is not a regular file or directory")
    for entry in sorted(os.listdir(path)):
        yield from _walk(root, f"{rel}/{entry}")


def collect_uploads(
    patterns: list[str], cwd: str | None = None, limits: FileLimits | None = None
) -> dict[str, bytes]:
    """The files ``patterns`` name under ``cwd``, as ``{relative name: bytes}``."""
    limits = limits or FileLimits()
    root = os.path.realpath(cwd or os.getcwd())
    names: dict[str, None] = {}  # ordered, and a constant-time "seen already"
    for pattern in patterns:
        pattern = os.path.normpath(pattern).replace(os.sep, "/")
        if os.path.isabs(pattern) or pattern == ".." or pattern.startswith("../"):
            raise _refuse(f"{pattern!r}: only paths inside the working directory")
        matches = sorted(glob.glob(pattern, root_dir=root, recursive=True))
        if not matches:
            raise _refuse(f"{pattern!r} matches nothing in {root}")
        for match in matches:
            for rel in _walk(root, match.replace(os.sep, "/")):
                if safe_name(rel) is None or not _inside(root, os.path.join(root, rel)):
                    raise _refuse(f"{rel!r} is outside the working directory")
                names[rel] = None
                if len(names) > limits.max_files:
                    # Stopped here: a large tree (or the whole home directory) is not walked.
                    raise _refuse(f"over {limits.max_files} files, the limit (at {rel})")
    files: dict[str, bytes] = {}
    total = 0
    for rel in names:
        total += os.path.getsize(os.path.join(root, rel))
        if total > limits.max_bytes:
            raise _refuse(f"over {limits.max_bytes:,} bytes in all (at {rel})")
        with open(os.path.join(root, rel), "rb") as fh:
            files[rel] = fh.read()
    return files


def _make_parents(root: str, name: str) -> None:
    # Created one level at a time, refusing any existing link on the way: a link in the
    # working directory must not carry a file from the sandbox somewhere else.
    here = root
    for part in name.split("/")[:-1]:
        here = os.path.join(here, part)
        if os.path.islink(here) or (os.path.exists(here) and not os.path.isdir(here)):
            raise CellError(
                f"%%sandbox --download: {name!r}: {part!r} is a link or a file here",
                kind="Refused",
            )
        if not os.path.exists(here):
            try:
                os.mkdir(here)
            except OSError as exc:
                raise CellError(
                    f"%%sandbox --download: {name[:200]!r}: {exc.strerror}", kind="Refused"
                ) from None


def save_downloads(files: dict[str, bytes], cwd: str | None = None) -> list[str]:
    """Write the run's files under ``cwd``; returns the names that replaced an existing entry.

    Each file is written to a new temporary file beside its target and renamed over it: an
    existing name is replaced, never opened, so a hard link, a FIFO (which would block the
    kernel on open) or a link in its place is not written through. CellError if refused.
    """
    root = os.path.realpath(cwd or os.getcwd())
    replaced: list[str] = []
    mask = os.umask(0o022)
    os.umask(mask)
    for name, data in files.items():
        if safe_name(name) is None or not isinstance(data, bytes):
            raise CellError(f"%%sandbox --download: refused file name {name!r}", kind="Refused")
        path = os.path.join(root, name)
        _make_parents(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            raise CellError(
                f"%%sandbox --download: {name}: a directory of that name is here", kind="Refused"
            )
        existed = os.path.lexists(path)
        try:
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".gz-download-")
        except OSError as exc:
            raise CellError(
                f"%%sandbox --download: {name}: {exc.strerror}", kind="Refused"
            ) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), 0o644 & ~mask)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise CellError(
                f"%%sandbox --download: {name}: {exc.strerror}", kind="Refused"
            ) from None
        if existed:
            replaced.append(name)
    return replaced


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def _side(arrow: str, files: dict[str, bytes]) -> str:
    names = list(files)
    shown = ", ".join(names[:5]) + (f", … ({len(names) - 5} more)" if len(names) > 5 else "")
    count = f"{len(names)} file{'s' if len(names) != 1 else ''}"
    return f"{arrow} {count} ({_size(sum(map(len, files.values())))}): {shown}"


def summary(
    sent: dict[str, bytes], received: dict[str, bytes], asked: bool, replaced: Sequence[str] = ()
) -> str | None:
    """One line saying what moved and which existing files a download replaced, or None when
    no file option was given."""
    parts = []
    if sent:
        parts.append(_side("sent", sent))
    if received or asked:
        parts.append(_side("received", received) if received else "received no files")
    if replaced:
        shown = ", ".join(replaced[:5]) + (
            f", … ({len(replaced) - 5} more)" if len(replaced) > 5 else ""
        )
        parts.append(f"replaced {len(replaced)} existing: {shown}")
    return "sandbox files: " + " · ".join(parts) if parts else None
