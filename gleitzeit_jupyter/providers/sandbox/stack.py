"""Which data libraries a sandbox image holds, beside the kernel's own.

A DataFrame or array that crosses between different major versions of numpy, pandas or
pyarrow may change meaning on the way (pandas 3 copies on write, pandas 1.5 does not; dtypes
differ), so a run that moves values says so once per kernel.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from typing import Any

__all__ = ["STACK", "kernel_stack", "libraries_of", "mismatches", "stack_key"]

_LIBRARIES = ("numpy", "pandas", "pyarrow")
#: The data stack the default image copies from the kernel that builds it.
STACK = ("numpy", "pandas", "pyarrow", "matplotlib")
_VERSION = re.compile(r"\d+(\.\d+){0,3}[\w.+-]{0,20}")


def _kernel_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def kernel_stack() -> dict[str, str]:
    """Versions of :data:`STACK` installed in this kernel (absent libraries are left out)."""
    found = {name: _kernel_version(name) for name in STACK}
    return {name: v for name, v in found.items() if v is not None}


def stack_key(versions: dict[str, str], python: str = "") -> str:
    """A short content hash of a version set (and the image's Python): the default image is
    rebuilt when, and only when, it changes."""
    text = json.dumps({"python": python, **versions}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _major(version: str) -> str:
    return version.split(".")[0]


def libraries_of(values: Any) -> set[str]:
    """The data libraries whose objects are among ``values`` (pandas objects hold numpy's)."""
    found = set()
    for value in values:
        top = type(value).__module__.split(".")[0]
        if top in _LIBRARIES:
            found.add(top)
            if top == "pandas":
                found.add("numpy")
    return found


def mismatches(hello: Any, libraries: set[str]) -> list[str]:
    """One sentence per library of ``libraries`` whose major version differs between the
    kernel and the image.

    ``hello`` is what the container's supervisor reported when it started (checked here:
    only short version strings are used)."""
    versions = hello.get("versions") if isinstance(hello, dict) else None
    if not isinstance(versions, dict):
        return []
    out = []
    for name in (n for n in _LIBRARIES if n in libraries):
        inside, here = versions.get(name), _kernel_version(name)
        if not isinstance(inside, str) or not _VERSION.fullmatch(inside) or here is None:
            continue
        if _major(inside) != _major(here):
            out.append(
                f"the sandbox image has {name} {inside}, the kernel {name} {here}: values may"
                " change type or behaviour on the way (build the image from this kernel's stack)"
            )
    return out
