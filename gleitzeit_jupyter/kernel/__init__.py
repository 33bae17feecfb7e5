"""The notebook layer: the kernel-resident runtime, magics, widgets and the comm.

``%load_ext gleitzeit_jupyter`` calls :func:`load_ipython_extension` (re-exported by the
top-level package).
"""

from __future__ import annotations

from typing import Any

from .llm_images import ImageError
from .llm_schema import SchemaError
from .runtime import Gleitzeit, Runtime, get_runtime, reset_runtime
from .thinking import Answer

__all__ = [
    "Answer",
    "Gleitzeit",
    "ImageError",
    "Runtime",
    "SchemaError",
    "get_runtime",
    "load_ipython_extension",
    "reset_runtime",
    "unload_ipython_extension",
]

_MAGICS_NAME = "GleitzeitMagics"


def _config_for(ipython: Any) -> Gleitzeit:
    # One Gleitzeit per shell, registered in shell.configurables so %config finds it, and
    # kept across %unload_ext / %load_ext so settings survive a reload.
    for c in ipython.configurables:
        if isinstance(c, Gleitzeit):
            return c
    cfg = Gleitzeit(parent=ipython)
    ipython.configurables.append(cfg)
    return cfg


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext gleitzeit_jupyter``: magics, configuration, and the sidebar's comm."""
    from . import comm
    from .magics import GleitzeitMagics

    cfg = _config_for(ipython)
    magics = GleitzeitMagics(ipython, cfg)
    ipython.register_magics(magics)
    ipython.events.register("post_run_cell", magics.errors.on_post_run_cell)
    # In a kernel this starts the runtime (get_runtime() finds cfg on the shell); in a
    # terminal IPython it does nothing and the runtime starts on first use.
    comm.register_comm_target(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext gleitzeit_jupyter``: no magic, thread, task or container left behind."""
    from . import comm

    comm.unregister_comm_target(ipython)
    manager = ipython.magics_manager
    instance = manager.registry.pop(_MAGICS_NAME, None)
    if instance is not None:
        errors = getattr(instance, "errors", None)
        if errors is not None:
            ipython.events.unregister("post_run_cell", errors.on_post_run_cell)
        for kind, table in instance.magics.items():
            for name in table:
                manager.magics[kind].pop(name, None)
    reset_runtime()
