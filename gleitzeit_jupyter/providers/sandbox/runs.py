"""One ``python/execute`` run on a container: the request built from the call's params, the
reply turned into the result, and what a lost container means for the call.

A run that may have started is never retried elsewhere (its code may have had effects): a
container found dead before the request was written fails with ``started=False`` (the hub may
retry it), one lost during the run is replaced and the run reported as not completed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from ...hub import ExecutionTimeout, ResourceFailed, ResourceInstance, UserError
from .codec import CodecError, encode_value
from .container import ContainerDied, SandboxContainer, SupervisorUnresponsive
from .files import check_globs, pack_uploads
from .outputs import safe_outputs
from .protocol import ProtocolError
from .results import ResultLimits, check_names, shape_result
from .slots import Slot
from .stack import libraries_of, mismatches

__all__ = ["RunsMixin"]

log = logging.getLogger(__name__)


class RunsMixin:
    """Mixed into :class:`PythonProvider`, which provides the attributes below."""

    timeout: float
    limits: ResultLimits
    max_runs_per_container: int
    _arrow: bool
    _recycle: Callable[..., Any]

    async def _run(
        self,
        inst: ResourceInstance,
        container: SandboxContainer,
        params: dict[str, Any],
        on_chunk: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        slot: Slot = inst.handle
        timeout = float(params.get("timeout") or self.timeout)
        caps = container.hello.get("caps")
        # Arrow only where both ends have pyarrow; a reply in Arrow is refused otherwise.
        arrow = self._arrow and isinstance(caps, dict) and caps.get("pyarrow") is True
        attachments: list[Any] = []  # the inputs' binary payloads, sent after the request
        try:
            inputs = {
                k: encode_value(v, arrow=arrow, name=k, attach=attachments)
                for k, v in (params.get("inputs") or {}).items()
            }
        except CodecError as exc:
            raise UserError(str(exc)) from None
        returns = check_names(params.get("returns") or params.get("values") or [])
        limits = self.limits
        files = pack_uploads(params.get("files"), limits.files)
        download = check_globs(params.get("download"))
        if params.get("max_output"):
            limits = dataclasses.replace(limits, max_output=int(params["max_output"]))
        request = {
            "code": params["code"],
            "inputs": inputs,
            "returns": returns,
            "session": params.get("session") is not None,
            "arrow": arrow,
            "max_output": limits.max_output,
            "files": files,
            "download": download,
            "limits": {
                "max_files": limits.files.max_files,
                "max_files_bytes": limits.files.max_bytes,
                "max_mime_bytes": limits.outputs.max_mime_bytes,
                "max_outputs": limits.outputs.max_outputs,
                "max_outputs_bytes": limits.outputs.max_total_bytes,
                "max_value_bytes": limits.max_value_bytes,
                "max_values_bytes": limits.max_values_bytes,
                "max_columns": limits.max_columns,
                "max_reply": limits.max_reply_with_files if download else limits.max_reply,
            },
        }
        started = time.perf_counter()
        slot.runs += 1
        shown: list[dict[str, Any]] = []
        relay = None if on_chunk is None else _relay(on_chunk, shown, limits)
        try:
            raw, timed_out = await container.run(
                request, timeout, on_chunk=relay, attachments=attachments
            )
        except ProtocolError as exc:  # our own request did not fit in a message
            raise UserError(f"the run's code and inputs are too large to send: {exc}") from None
        except ContainerDied as exc:
            await self._replace_after_failure(inst, container, str(exc))
            if not exc.sent:
                raise ResourceFailed(
                    f"the sandbox container was gone before the run was sent ({exc})",
                    instance=inst.id,
                    started=False,
                ) from None
            raise ResourceFailed(
                f"the sandbox container died during the run ({exc}); the run did not run to"
                " completion",
                instance=inst.id,
                hint="the container was replaced; check for partial effects, then run again",
            ) from None
        except SupervisorUnresponsive as exc:
            await self._replace_after_failure(inst, container, str(exc))
            raise ExecutionTimeout(
                f"the sandbox stopped answering ({exc}); the run did not run to completion",
                instance=inst.id,
                hint="its container was replaced; run again",
            ) from None
        result = shape_result(
            raw,
            timeout=timeout,
            started=started,
            timed_out=timed_out,
            requested=returns,
            arrow=arrow,
            limits=limits,
            download=download,
        )
        # Outputs shown while the run went on come first, in the order they were produced.
        result["outputs"] = _capped(shown + result["outputs"], limits.outputs.max_outputs)
        result["streamed_outputs"] = len(shown)
        result["container"] = container.id[:12]
        crossed = [*(params.get("inputs") or {}).values(), *result["values"].values()]
        result["warnings"] = mismatches(container.hello, libraries_of(crossed))
        slot.cpu_ms += result["cpu_ms"] or 0.0
        slot.peak_memory_mb = max(slot.peak_memory_mb, result["peak_memory_mb"] or 0.0)
        anomaly = raw.get("oom") is True or raw.get("killed") is True or raw.get("session_lost")
        if anomaly or (container.runs >= self.max_runs_per_container and not params.get("session")):
            self._recycle(
                inst,
                "out of memory"
                if raw.get("oom")
                else "worker killed"
                if anomaly
                else "max_runs_per_container reached",
            )
        return result

    async def _replace_after_failure(
        self, inst: ResourceInstance, container: SandboxContainer, reason: str
    ) -> None:
        state = await container.engine.call(container.engine.inspect_state, container.id)
        if state and state.get("OOMKilled"):
            reason = f"out of memory: {reason}"
        try:
            await self._recycle(inst, reason)
        except Exception as exc:  # engine trouble: the health check keeps trying
            log.warning("sandbox: replacing %s failed: %s", inst.id, exc)


def _capped(outputs: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    # Streamed and final outputs were each capped; together they may not exceed the cap
    # (plus the one note saying what was left out).
    if len(outputs) <= most + 1:
        return outputs
    note = f"[gleitzeit: {len(outputs) - most} more outputs not shown (max_outputs)]"
    return [*outputs[:most], {"type": "display_data", "data": {"text/plain": note}}]


def _relay(
    on_chunk: Callable[[dict[str, Any]], None], shown: list[dict[str, Any]], limits: ResultLimits
) -> Callable[[dict[str, Any]], None]:
    """Pass text chunks on; an output only once sanitised and within the run's caps."""
    budget = [limits.outputs.max_total_bytes]

    def relay(chunk: dict[str, Any]) -> None:
        if "output" not in chunk:
            on_chunk(chunk)
            return
        if len(shown) >= limits.outputs.max_outputs:
            return
        safe = safe_outputs([chunk["output"]], limits.outputs)
        size = sum(len(str(v)) for out in safe for v in out["data"].values())
        if not safe or size > budget[0]:
            return
        budget[0] -= size
        shown.extend(safe)
        on_chunk({"output": safe[0]})

    return relay
