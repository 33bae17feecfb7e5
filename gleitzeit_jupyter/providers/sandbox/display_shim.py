"""``IPython.display`` inside the sandbox, for images without IPython (stdlib only).

Code written for a notebook does ``from IPython.display import display, HTML``; this gives it
the names it uses most, backed by the worker's ``display``. Installed only when the image has
no IPython of its own.
"""

from __future__ import annotations

import base64
import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["install"]


class _Rich:
    """An object with one rich representation, like IPython's display classes."""

    _method = ""

    def __init__(self, data: Any = None, **_: Any) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object>"


class HTML(_Rich):
    def _repr_html_(self) -> str:
        return str(self.data)


class Markdown(_Rich):
    def _repr_markdown_(self) -> str:
        return str(self.data)


class SVG(_Rich):
    def _repr_svg_(self) -> str:
        return self.data.decode() if isinstance(self.data, bytes) else str(self.data)


class Image(_Rich):
    """PNG bytes (or a path to a PNG file); other formats show as text only."""

    def __init__(self, data: Any = None, filename: str | None = None, **_: Any) -> None:
        if filename is not None:
            with open(filename, "rb") as fh:
                data = fh.read()
        super().__init__(data)

    def _repr_png_(self) -> str | None:
        if isinstance(self.data, bytes):
            return base64.b64encode(self.data).decode("ascii")
        return None


class Pretty(_Rich):
    def __repr__(self) -> str:
        return str(self.data)


def install(display: Callable[..., None]) -> None:
    """Make ``import IPython.display`` work, unless the image has a real IPython."""
    if "IPython" in sys.modules:
        return
    try:
        import IPython  # noqa: F401

        return
    except ImportError:
        pass
    pkg = types.ModuleType("IPython")
    mod = types.ModuleType("IPython.display")
    pkg.__path__ = []  # a package, so "IPython.display" resolves as its submodule
    names: dict[str, Any] = {
        "display": display,
        "HTML": HTML,
        "Markdown": Markdown,
        "SVG": SVG,
        "Image": Image,
        "Pretty": Pretty,
        "clear_output": lambda wait=False: None,
    }
    mod.__dict__.update(names)
    pkg.display = mod  # type: ignore[attr-defined]
    pkg.get_ipython = lambda: None  # type: ignore[attr-defined]
    # matplotlib reads this whenever an "IPython" module is loaded; 8.24+ needs nothing more
    # from it (older versions send it to IPython.core, which the shim does not have).
    pkg.version_info = (8, 24, 0, "")  # type: ignore[attr-defined]
    sys.modules["IPython"] = pkg
    sys.modules["IPython.display"] = mod
