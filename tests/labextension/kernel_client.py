"""A real ipykernel driven over ZMQ with jupyter_client, speaking the comm protocol like
the labextension does (comm_open / comm_msg / comm_close on the shell channel)."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_client.manager import KernelManager

TARGET = "gleitzeit"


class KernelHarness:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.km = KernelManager(kernel_name="python3")
        if env is not None:
            self.km.start_kernel(env=env)
        else:
            self.km.start_kernel()
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    # --------------------------------------------------------------- execution
    def execute(self, code: str, timeout: float = 60) -> dict[str, Any]:
        """Run code; raise with the traceback if it fails. Collects iopub while waiting."""
        msg_id = self.kc.execute(code)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        self.drain_iopub(0.2)
        content = reply["content"]
        if content["status"] != "ok":
            raise AssertionError(
                f"kernel error: {content.get('ename')}: {content.get('evalue')}\n"
                + "\n".join(content.get("traceback", []))
            )
        return content

    def drain_iopub(self, wait: float = 0.0) -> list[dict[str, Any]]:
        got = []
        deadline = time.monotonic() + wait
        while True:
            remaining = deadline - time.monotonic()
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.01, remaining))
            except queue.Empty:
                if remaining <= 0:
                    break
                continue
            got.append(msg)
            self.iopub.append(msg)
        return got

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first iopub message (new or already seen and unconsumed) matching predicate."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.iopub):
                if predicate(msg):
                    del self.iopub[: i + 1]
                    return msg
            self.iopub.clear()
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for an iopub message")
            self.drain_iopub(0.1)

    # --------------------------------------------------------------- comms
    def comm_open(self, data: dict[str, Any] | None = None, target: str = TARGET) -> str:
        comm_id = uuid.uuid4().hex
        msg = self.kc.session.msg(
            "comm_open", {"comm_id": comm_id, "target_name": target, "data": data or {}}
        )
        self.kc.shell_channel.send(msg)
        return comm_id

    def comm_send(self, comm_id: str, data: dict[str, Any]) -> None:
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    def comm_close(self, comm_id: str) -> None:
        msg = self.kc.session.msg("comm_close", {"comm_id": comm_id, "data": {}})
        self.kc.shell_channel.send(msg)


def is_comm_msg(comm_id: str | None = None, kind: str | None = None):
    def pred(msg: dict[str, Any]) -> bool:
        if msg["msg_type"] != "comm_msg":
            return False
        content = msg["content"]
        if comm_id is not None and content["comm_id"] != comm_id:
            return False
        return kind is None or content["data"].get("type") == kind

    return pred
