"""Several panels at once: :class:`StatusBoard` over a kernel runtime, or a list of pools."""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as w

from .cells import hook_shell
from .display import StaticDisplay
from .panel import StatusPanel


class StatusBoard:
    """Panels for every pool of a kernel runtime; pools started later get a panel when they
    appear (the runtime announces them as events, no polling)."""

    def __init__(self, runtime: Any, **panel_opts: Any) -> None:
        self._setup(
            runtime,
            panel_opts,
            "<i>no pools running yet: they start on the first %%llm / %%sandbox"
            " (or %gleitzeit add ollama URL)</i>",
        )
        self.widget.add_class("gz-board")
        for name, provider in runtime.providers.items():
            self.panels[name] = StatusPanel(provider, loop=runtime.loop, **panel_opts)
        self._layout()
        self._unsubscribe = runtime.subscribe(self._on_runtime_event)

    def _setup(self, runtime: Any, panel_opts: dict[str, Any], empty: str) -> None:
        self.runtime = runtime
        self.panel_opts = panel_opts
        self.panels: dict[str, StatusPanel] = {}
        self.closed = False
        self._lock = threading.RLock()
        self.empty = w.HTML(empty)
        self.widget = w.VBox([])
        self.display = StaticDisplay(self.widget, self.static)
        hook_shell()

    def _layout(self) -> None:
        with self._lock:
            kids = [p.widget for p in self.panels.values() if not p.closed]
            self.widget.children = kids or [self.empty]

    def _on_runtime_event(self, name: str, event: Any) -> None:
        # Runs on the runtime loop. Only pool-level membership (instance_id None) matters.
        if self.closed or event.kind != "membership" or event.instance_id is not None:
            return
        with self._lock:
            if event.new == "added" and name not in self.panels:
                provider = self.runtime.providers.get(name)
                if provider is not None:
                    self.panels[name] = StatusPanel(
                        provider, loop=self.runtime.loop, **self.panel_opts
                    )
            elif event.new == "removed" and name in self.panels:
                self.panels.pop(name).close()
            else:
                return
        self._layout()

    def _ipython_display_(self) -> None:
        self.display.show()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.display.bundle(live=not self.closed)

    def static(self) -> dict[str, str]:
        """The static pictures of every panel, one after the other."""
        with self._lock:
            panels = [p for p in self.panels.values() if not p.closed]
        if not panels:
            return {"text/html": self.empty.value, "text/plain": repr(self)}
        parts = [p.static() for p in panels]
        return {
            "text/html": "".join(f"<div>{part['text/html']}</div>" for part in parts),
            "text/plain": "\n\n".join(part["text/plain"] for part in parts),
        }

    def __repr__(self) -> str:
        return f"<StatusBoard {', '.join(self.panels) or 'no pools'}>"

    @property
    def updates(self) -> int:
        return sum(p.updates for p in self.panels.values())

    def close(self) -> None:
        if self.closed:
            return
        self._unsubscribe()
        self.display.finish()  # the last picture, taken before the panels close
        self.closed = True
        for panel in list(self.panels.values()):
            panel.close()
        self.widget.close()


class ProviderList(StatusBoard):
    def __init__(self, panels: list[StatusPanel]) -> None:
        self._setup(None, {}, "<i>no pools</i>")
        self.panels = {getattr(p.provider, "name", str(k)): p for k, p in enumerate(panels)}
        self._layout()
        self._unsubscribe = lambda: None
