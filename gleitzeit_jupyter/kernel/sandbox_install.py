"""``%sandbox install PKG ...``: a derived image with more packages, and the pool moved to it.

The image is built like ``gleitzeit-sandbox image build --packages`` (wheels fetched on the
host, installed without network, cached by content hash), on top of the image the kernel's
sandbox uses now, so successive installs add up. The default pool then moves to the new image:
new runs start there, runs already queued or running finish on the old containers.
"""

from __future__ import annotations

import html
from typing import Any

from IPython.display import display

from .render import CellError

__all__ = ["install"]

# What build_packages logs, in order: how far along a build is.
_STEPS = ("$ pip download", "installing", "built", "exists")


class _Progress:
    def __init__(self, packages: list[str]) -> None:
        self.what = " ".join(packages)
        self.handle = display(self._bundle(0, "starting"), raw=True, display_id=True)

    def _bundle(self, step: int, text: str) -> dict[str, str]:
        done = min(step, 3)
        bar = "#" * (done * 10) + "." * ((3 - done) * 10)
        line = f"[{bar}] %sandbox install {self.what}: {text}"
        return {
            "text/plain": line,
            "text/html": f'<progress value="{done}" max="3"></progress> '
            f"<code>{html.escape(line.split('] ', 1)[1])}</code>",
        }

    def log(self, text: str) -> None:
        step = next((i + 1 for i, s in enumerate(_STEPS) if text.startswith(s)), 1)
        if self.handle is not None:
            self.handle.update(self._bundle(3 if step >= 3 else step, text), raw=True)


def install(rt: Any, cfg: Any, packages: list[str]) -> str:
    """Build the image with ``packages`` and switch the default sandbox pool to it."""
    from ..providers.sandbox.image import DEFAULT_IMAGE
    from ..providers.sandbox.packages import build_packages

    if not packages:
        raise CellError("usage: %sandbox install PKG [PKG ...]", kind="UsageError")
    progress = _Progress(packages)
    base = cfg.sandbox_image or DEFAULT_IMAGE
    try:
        name = build_packages(packages, base=base, log=progress.log)
    except (ValueError, RuntimeError) as exc:
        raise CellError(f"%sandbox install: {exc}", kind="InstallFailed") from None
    except Exception as exc:
        raise CellError(
            f"%sandbox install: {type(exc).__name__}: {exc}", kind="InstallFailed"
        ) from None
    if name != base:
        rt.swap_provider("sandbox", lambda: rt._make_sandbox(image=name, mem=None, network=False))
        cfg._pool_swapped = True
        try:
            cfg.sandbox_image = name
        finally:
            cfg._pool_swapped = False
    print(f"sandbox image: {name} ({' '.join(packages)} on {base}); the pool uses it now")
    return name
