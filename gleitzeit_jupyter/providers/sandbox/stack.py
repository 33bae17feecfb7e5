"""Which data libraries a sandbox image holds, beside the kernel's own.

A DataFrame or array that crosses between different major versions of numpy, pandas or
pyarrow may change meaning on the way (pandas 3 copies on write, pandas 1.5 does not; dtypes
differ), so a run that moves values says so once per kernel.
"""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

__all__ = ["libraries_of", "mismatches"]

_LIBRARIES = ("numpy", "pandas", "pyarrow")
_VERSION = re.compile(r"\d+(\.\d+){0,3}[\w.+-]{0,20}")


def _kernel_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


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
