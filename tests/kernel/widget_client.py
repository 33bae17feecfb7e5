"""A real IPython kernel driven over jupyter_client, with a front end's view of its widgets.

:class:`WidgetStore` applies ``comm_open`` / ``comm_msg`` (update, echo_update) / ``comm_close``
messages to model states exactly as a front end's widget manager does, so tests assert what a
browser would render: label values, colours, children, without trusting the kernel's side.
Comm messages the test sends back (button clicks, dropdown changes) use the front end's wire
format too.
"""

from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import start_new_kernel

WIDGET_TARGET = "jupyter.widget"


@dataclass
class Model:
    id: str
    state: dict[str, Any]
    updates: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed: bool = False

    @property
    def classes(self) -> list[str]:
        return list(self.state.get("_dom_classes", []))


class WidgetStore:
    def __init__(self) -> None:
        self.models: dict[str, Model] = {}

    def handle(self, msg: dict[str, Any]) -> None:
        kind = msg["header"]["msg_type"]
        content = msg.get("content", {})
        now = time.monotonic()
        if kind == "comm_open" and content.get("target_name") == WIDGET_TARGET:
            state = dict(content["data"].get("state", {}))
            self.models[content["comm_id"]] = Model(content["comm_id"], state)
        elif kind == "comm_msg":
            model = self.models.get(content["comm_id"])
            data = content.get("data", {})
            if model is not None and data.get("method") in ("update", "echo_update"):
                model.state.update(data.get("state", {}))
                model.updates.append((now, dict(data.get("state", {}))))
        elif kind == "comm_close":
            model = self.models.get(content["comm_id"])
            if model is not None:
                model.closed = True

    def get(self, ref: str) -> Model:
        return self.models[ref.removeprefix("IPY_MODEL_")]

    def find(self, *classes: str, open_only: bool = True) -> list[Model]:
        return [
            m
            for m in self.models.values()
            if all(c in m.classes for c in classes) and not (open_only and m.closed)
        ]

    def one(self, *classes: str) -> Model:
        found = self.find(*classes)
        assert len(found) == 1, (classes, [m.state for m in found])
        return found[0]

    def color(self, model: Model) -> str | None:
        return self.get(model.state["style"]).state.get("text_color")

    def descendants(self, model: Model) -> list[Model]:
        out = []
        for ref in model.state.get("children", []):
            child = self.get(ref)
            out.append(child)
            out += self.descendants(child)
        return out


class Kernel:
    """A kernel plus a client; every IOPub message seen feeds :attr:`widgets`."""

    def __init__(self) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
        self.widgets = WidgetStore()
        self.log: list[tuple[float, dict[str, Any]]] = []

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)

    def _take(self, msg: dict[str, Any]) -> None:
        self.log.append((time.monotonic(), msg))
        self.widgets.handle(msg)

    def execute(
        self,
        code: str,
        timeout: float = 120,
        allow_error: bool = False,
        cell_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``code``; return the IOPub messages of that request (all are also logged).
        Raises on an error in the cell unless ``allow_error``. ``cell_id`` is sent in the
        request's metadata, as JupyterLab does."""
        if cell_id is None:
            msg_id = self.kc.execute(code)
        else:
            content = {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            msg = self.kc.session.msg("execute_request", content)
            msg["metadata"]["cellId"] = cell_id
            self.kc.shell_channel.send(msg)
            msg_id = msg["header"]["msg_id"]
        mine: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"cell did not finish in {timeout}s:\n{code}")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            self._take(msg)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            mine.append(msg)
            kind = msg["header"]["msg_type"]
            if kind == "error" and not allow_error:
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = self.kc.get_shell_msg(timeout=timeout)
        if not allow_error:
            assert reply["content"]["status"] == "ok", reply["content"]
        return mine

    def settle(self, seconds: float) -> None:
        """Keep reading IOPub for ``seconds`` (updates pushed while the kernel is idle)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self._take(self.kc.get_iopub_msg(timeout=left))
            except queue.Empty:
                break

    def value(self, code: str) -> Any:
        """Evaluate an expression in the kernel and return its ``text/plain`` as Python."""
        import ast

        msgs = self.execute(code)
        for msg in msgs:
            if msg["header"]["msg_type"] == "execute_result":
                return ast.literal_eval(msg["content"]["data"]["text/plain"])
        raise AssertionError(f"no value from {code!r}")

    def send_widget(self, model_id: str, data: dict[str, Any]) -> None:
        """A comm message from the 'front end' to a widget (click, value change)."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": model_id, "data": data})
        msg["header"]["msg_id"] = uuid.uuid4().hex
        self.kc.shell_channel.send(msg)

    def click(self, model: Model) -> None:
        self.send_widget(model.id, {"method": "custom", "content": {"event": "click"}})

    def set_state(self, model: Model, state: dict[str, Any]) -> None:
        self.send_widget(model.id, {"method": "update", "state": state, "buffer_paths": []})
