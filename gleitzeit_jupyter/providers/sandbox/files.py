"""Files into a run's working directory and back, with the names and sizes checked.

Names are relative paths with ``/`` separators. On the way in they come from the caller; on
the way back from the container, which is hostile: a reply may name ``../../.bashrc``, an
absolute path, a NUL, or a million files, so every name, count and size is checked here before
anything reaches the caller (and the kernel checks the names again where it writes them).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import functools
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...hub import UserError

__all__ = [
    "FileLimits",
    "check_globs",
    "matches_download",
    "pack_uploads",
    "safe_name",
    "unpack_downloads",
]

MiB = 1024 * 1024
_MAX_NAME = 1024
_MAX_GLOBS = 64
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class FileLimits:
    """Caps on files moved per run, each way (the container's /tmp holds 64 MiB)."""

    max_files: int = 1000
    max_bytes: int = 32 * MiB


def safe_name(name: Any) -> str | None:
    """``name`` when it is a plain relative path that stays inside its directory, else None."""
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME:
        return None
    if "\x00" in name or "\\" in name or name.startswith("/"):
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    # Control and format characters (C0, DEL, C1, bidi overrides, zero-width), line
    # separators and lone surrogates: a name must read as what it is where it is shown, and
    # be a path the file system can take.
    if any(unicodedata.category(c) in _UNSAFE_CATEGORIES for c in name):
        return None
    return name


def pack_uploads(files: Any, limits: FileLimits) -> dict[str, str]:
    """``{name: bytes}`` from the caller as the request's ``{name: base64}``; UserError if bad."""
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise UserError("files must be a dict of {relative name: bytes}")
    if len(files) > limits.max_files:
        raise UserError(f"{len(files)} files to send, over the limit of {limits.max_files}")
    out: dict[str, str] = {}
    total = 0
    for name, data in files.items():
        if safe_name(name) is None:
            raise UserError(f"refused file name {name!r}: use a relative path inside the run")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UserError(f"files[{name!r}] must be bytes, not {type(data).__name__}")
        total += len(data)
        if total > limits.max_bytes:
            raise UserError(
                f"files to send exceed {limits.max_bytes:,} bytes (FileLimits.max_bytes)"
            )
        out[name] = base64.b64encode(bytes(data)).decode("ascii")
    return out


def check_globs(patterns: Any) -> list[str]:
    """The ``download`` patterns, each relative and free of ``..``; UserError if bad."""
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)) or len(patterns) > _MAX_GLOBS:
        raise UserError(f"download must be a list of at most {_MAX_GLOBS} glob patterns")
    for p in patterns:
        if not isinstance(p, str) or not p or safe_name(p) is None:
            raise UserError(f"refused download pattern {p!r}: use a relative glob such as '*.csv'")
    return list(patterns)


def matches_download(name: str, patterns: list[str]) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` in the run's directory could have found
    ``name`` for one of ``patterns``: ``*`` stays within a segment, ``**`` spans directories,
    and a dot-name is only matched by a pattern segment that starts with a dot."""
    parts = name.split("/")
    for pattern in patterns:
        pats = pattern.split("/")

        @functools.cache
        def match(i: int, j: int, pats: list[str] = pats) -> bool:
            if j == len(pats):
                return i == len(parts)
            if pats[j] == "**":
                if match(i, j + 1):
                    return True
                return i < len(parts) and not parts[i].startswith(".") and match(i + 1, j)
            if i == len(parts):
                return False
            if parts[i].startswith(".") and not pats[j].startswith("."):
                return False
            return fnmatch.fnmatchcase(parts[i], pats[j]) and match(i + 1, j + 1)

        if match(0, 0):
            return True
    return False


def unpack_downloads(
    raw: Any, limits: FileLimits, patterns: list[str] | None = None
) -> tuple[dict[str, bytes], dict[str, str] | None]:
    """The files a reply carries, as ``{name: bytes}``; anything unsafe fails the transfer.

    Only names the run's ``download`` patterns match are accepted (none without patterns):
    the kernel writes them into its working directory, which is on its import path and may be
    the user's home, so an unasked-for ``numpy.py`` or ``.ipython/.../startup/x.py`` would be
    code the host runs later.
    """

    def bad(why: str) -> tuple[dict[str, bytes], dict[str, str]]:
        return {}, {"ename": "FileTransferError", "evalue": why, "traceback": ""}

    if raw is None or raw == {}:
        return {}, None
    if not isinstance(raw, dict):
        return bad("the run sent a malformed file list")
    if len(raw) > limits.max_files:
        return bad(f"the run sent {len(raw):,} files, over the limit of {limits.max_files}")
    files: dict[str, bytes] = {}
    total = 0
    for name, text in raw.items():
        if safe_name(name) is None:
            return bad(f"the run sent a file named {str(name)[:200]!r}, refused")
        if not matches_download(name, patterns or []):
            return bad(f"the run sent {name[:200]!r}, which no download pattern matches; refused")
        if not isinstance(text, str) or len(text) > 2 * limits.max_bytes:
            return bad(f"the run sent a malformed file {name!r}")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return bad(f"the run sent a malformed file {name!r}")
        total += len(data)
        if total > limits.max_bytes:
            return bad(f"the run's files exceed {limits.max_bytes:,} bytes (FileLimits.max_bytes)")
        files[name] = data
    return files, None
