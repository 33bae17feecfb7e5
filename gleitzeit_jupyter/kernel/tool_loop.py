"""The chat loop behind ``%%llm --tools``: ask, run the tools the model calls, send the
results back, until the model answers in text or ``--max-steps`` is reached.

One step is one model reply and the tools it called. Each call is shown as it happens; a
tool that raises, an unknown tool name or bad arguments become the text of the tool message
(``ExcType: message``), so the model can correct itself. Messages follow Ollama's chat API:
the assistant message carries ``tool_calls``, each result is a ``role: tool`` message with
``tool_name``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from IPython.display import display

from ..hub.errors import HubError, NoResourceAvailable, UserError
from .llm import (
    ChatStore,
    LlmOptions,
    LlmResult,
    build_request,
    final_bundle,
    finish_value,
)
from .llm_tools import SANDBOX, Tool, ToolError, describe_value, tool_from_function, truncate
from .render import (
    CellError,
    CellInterrupted,
    StreamingDisplay,
    cell_error,
    no_ollama_hint,
    tokens_per_second,
)
from .sandbox_tool import MODEL_LIMIT, sandbox_tool
from .tool_display import CallView

__all__ = [
    "DEFAULT_MAX_STEPS",
    "MAX_CALLS_PER_STEP",
    "ToolCall",
    "ToolsResult",
    "ask_with_tools",
    "build_tools",
]

DEFAULT_MAX_STEPS = 8
#: Calls of one model reply that are run; the rest are answered "not run" (--max-steps bounds
#: the replies, and one reply could otherwise ask for hundreds of sandbox runs).
MAX_CALLS_PER_STEP = 16


@dataclass
class ToolCall:
    """One call the model made: what it asked for and what it was told."""

    name: str
    arguments: Any
    result: str
    error: bool = False


@dataclass
class ToolsResult(LlmResult):
    """An answer reached through tools: the calls made, the steps taken, and whether the
    loop stopped at ``--max-steps`` (``stopped == "max_steps"``) before the model answered."""

    calls: list[ToolCall] = field(default_factory=list)
    steps: int = 0
    stopped: str | None = None


def build_tools(
    names: list[str], ns: MutableMapping[str, Any], rt: Any, *, sandbox_timeout: float | None
) -> list[Tool]:
    """The tools named in ``--tools``: kernel callables, and ``sandbox`` for ``python``."""
    tools: list[Tool] = []
    for name in names:
        if name == SANDBOX:
            tools.append(sandbox_tool(rt, timeout=sandbox_timeout))
            continue
        if name not in ns:
            raise UserError(
                f"--tools {name}: no function {name!r} in the notebook",
                hint="define it first, or use --tools sandbox for the code interpreter",
            )
        tools.append(tool_from_function(name, ns[name], await_with=rt.run))
    seen = [t.name for t in tools]
    if len(set(seen)) != len(seen):
        raise UserError("--tools: 'python' is the sandbox tool's name; rename your function")
    return tools


def _as_chat(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A generate request as the chat request it stands for (tools need the chat API)."""
    if method == "llm/chat":
        return params
    out = {k: v for k, v in params.items() if k not in ("prompt", "system", "images")}
    messages: list[dict[str, Any]] = []
    if params.get("system"):
        messages.append({"role": "system", "content": params["system"]})
    user: dict[str, Any] = {"role": "user", "content": params.get("prompt", "")}
    if params.get("images"):
        user["images"] = params["images"]
    messages.append(user)
    out["messages"] = messages
    return out


def ask_with_tools(
    runtime: Any,
    prompt: str,
    opts: LlmOptions,
    tools: list[Tool],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    default_model: str,
    chats: ChatStore | None = None,
    interval: float = 0.1,
    show: bool = True,
    show_calls: bool = True,
    hosts: list[str] | None = None,
    context: str = "%%llm",
) -> ToolsResult:
    """Run the tool loop for one prompt; like :func:`llm.ask`, but the model may call tools.

    With ``opts.stream`` and ``show`` the replies stream into the cell; otherwise the caller
    shows the final answer. Tool calls are shown as they happen with ``show_calls`` (also in
    the line form, whose answer is returned rather than shown). The footer's token counts
    and speed add up every step.
    """
    if max_steps < 1:
        raise UserError("--max-steps must be at least 1")
    method, params, kwargs = build_request(opts, prompt, default_model, chats)
    params = _as_chat(method, params)
    params["tools"] = [t.spec() for t in tools]
    if opts.timeout:
        kwargs["timeout"] = opts.timeout
    messages: list[dict[str, Any]] = params["messages"]
    turn: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    by_name = {t.name: t for t in tools}
    calls: list[ToolCall] = []
    start = time.perf_counter()
    first_at: float | None = None
    text, raw, instance, view = "", {}, None, None
    stopped: str | None = None
    steps = 0
    try:
        while True:
            steps += 1
            step = _Step(runtime, params, kwargs, opts, interval, show, context, hosts)
            step.run()
            first_at = first_at or step.first_at
            raw, instance = _add_usage(raw, step.raw), step.instance or instance
            reply: dict[str, Any] = {"role": "assistant", "content": step.text}
            if step.calls:
                reply["tool_calls"] = step.calls
            messages.append(reply)
            turn.append(reply)
            if step.text or view is None:
                text, view = step.text, step.view
            if not step.calls:
                break
            for n, call in enumerate(step.calls):
                if n < MAX_CALLS_PER_STEP:
                    done = _run_call(call, by_name, show_calls, context)
                else:
                    done = _not_run(call)
                calls.append(done)
                answer = {"role": "tool", "content": done.result, "tool_name": done.name}
                messages.append(answer)
                turn.append(answer)
            if len(step.calls) > MAX_CALLS_PER_STEP:
                _say_not_run(context, len(step.calls))
            if steps >= max_steps:
                stopped = "max_steps"
                break
    finally:
        for t in tools:
            if t.close is not None:
                t.close()
    latency_ms = (time.perf_counter() - start) * 1000.0
    if stopped:
        value: Any = text
        pending = [c.name for c in calls[-len(step.calls) :]]
        _say_stopped(context, steps, max_steps, pending, bool(text))
    else:
        try:
            value = finish_value(opts, text)
        except HubError as exc:
            if view is not None:
                view.finish()
            raise cell_error(exc, context=context) from None
    if view is not None:
        view.finish(final_bundle(opts, text, value) if not stopped else None)
    elif show and opts.stream and not stopped:
        display(final_bundle(opts, text, value), raw=True)
    if opts.chat and chats is not None:
        chats.messages(opts.chat, None).extend(turn)
    return ToolsResult(
        text=text,
        value=value,
        model=str(params["model"]),
        instance=instance,
        latency_ms=latency_ms,
        tokens_per_s=tokens_per_second(raw),
        raw=raw,
        first_token_ms=None if first_at is None else (first_at - start) * 1000.0,
        calls=calls,
        steps=steps,
        stopped=stopped,
    )


_USAGE = ("prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration")


def _add_usage(total: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """The last step's final object, its usage counts summed over all steps so far."""
    out = dict(step)
    for key in _USAGE:
        a, b = total.get(key), step.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            out[key] = a + b
    out.pop("tokens_per_s", None)  # per step; recomputed from the sums
    return out


class _Step:
    """One model reply: streamed into a display made when its first text arrives (a reply
    that only calls tools shows nothing), or fetched whole."""

    def __init__(
        self,
        runtime: Any,
        params: dict[str, Any],
        kwargs: dict[str, Any],
        opts: LlmOptions,
        interval: float,
        show: bool,
        context: str,
        hosts: list[str] | None,
    ) -> None:
        self.runtime, self.params, self.kwargs = runtime, params, kwargs
        self.opts, self.interval, self.show = opts, interval, show
        self.context, self.hosts = context, hosts
        self.text = ""
        self.calls: list[dict[str, Any]] = []
        self.raw: dict[str, Any] = {}
        self.instance: str | None = None
        self.view: StreamingDisplay | None = None
        self.first_at: float | None = None

    def run(self) -> None:
        error: BaseException | None = None
        interrupted = False
        try:
            provider = self.runtime.llm(self.params.get("model"))
            if self.opts.stream and self.show:
                stream = self.runtime.stream(
                    lambda: provider.stream("llm/chat", self.params, **self.kwargs)
                )
                for chunk in stream:
                    self._take(chunk)
                if self.view is not None:
                    self.view.flush()
            else:
                res = self.runtime.run(provider.execute("llm/chat", self.params, **self.kwargs))
                self._take(res)
                self.raw = res
        except KeyboardInterrupt:
            interrupted = True
        except Exception as exc:
            error = exc
        # Raised outside the except blocks so no library exception rides along as __context__.
        if interrupted:
            if self.view is not None:
                self.view.flush()
            raise CellInterrupted(
                f"{self.context} stopped; the request to the model was cancelled"
            ) from None
        if error is not None:
            hint = (
                no_ollama_hint(self.hosts or []) if isinstance(error, NoResourceAvailable) else None
            )
            raise cell_error(error, context=self.context, hint=hint) from None

    def _take(self, chunk: dict[str, Any]) -> None:
        msg = chunk.get("message") if isinstance(chunk.get("message"), dict) else {}
        piece = msg.get("content") if isinstance(msg.get("content"), str) else ""
        if piece:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            if self.opts.stream and self.show:
                if self.view is None:
                    self.view = StreamingDisplay(self.opts.fmt, self.interval)
                self.view.append(piece)
            else:
                self.text += piece
        found = msg.get("tool_calls") or chunk.get("tool_calls") or []
        self.calls.extend(c for c in found if isinstance(c, dict))
        self.instance = chunk.get("instance") or self.instance
        if chunk.get("done"):
            self.raw = chunk
        if self.view is not None:
            self.text = self.view.text


def _arguments(raw: Any) -> dict[str, Any]:
    # Ollama sends an object; OpenAI-compatible servers send a JSON string.
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolError(f"the arguments are not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ToolError("the arguments are nested too deeply") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ToolError("the arguments must be a JSON object")
    return raw


def _run_call(
    call: dict[str, Any], tools: dict[str, Tool], show: bool, context: str = "%%llm"
) -> ToolCall:
    fn = call.get("function") if isinstance(call.get("function"), dict) else {}
    name = str(fn.get("name") or "")
    raw_args = fn.get("arguments")
    tool = tools.get(name)
    view = CallView(name, raw_args) if show and (tool is None or tool.kind != "sandbox") else None
    error = True
    interrupted = False
    try:
        if tool is None:
            known = ", ".join(tools) or "none"
            raise ToolError(f"there is no tool named {name!r}; the tools are: {known}")
        value = tool.run(_arguments(raw_args))
        text, error = describe_value(value), False
    except KeyboardInterrupt:
        interrupted = True
    except ToolError as exc:
        text = f"error: {exc.message}"
    except BaseException as exc:
        # Whatever a kernel function raises is the model's to read, SystemExit included
        # (argparse and click exit on bad input); only the sandbox tool's own failure to run
        # (no docker, no container) is not the model's doing and stops the cell.
        if isinstance(exc, CellError) and tool is not None and tool.kind == "sandbox":
            raise
        text = f"{type(exc).__name__}: {exc}"
    if interrupted:
        if view is not None:
            view.done("error: interrupted", True)
        raise CellInterrupted(f"{context} stopped while the tool {name!r} ran") from None
    if view is not None:
        view.done(text, error)  # cut shorter for the cell, with the full length in its marker
    return ToolCall(name=name, arguments=raw_args, result=truncate(text, MODEL_LIMIT), error=error)


def _not_run(call: dict[str, Any]) -> ToolCall:
    fn = call.get("function") if isinstance(call.get("function"), dict) else {}
    text = (
        f"error: not run: at most {MAX_CALLS_PER_STEP} tool calls are run per reply;"
        " call it again in your next reply"
    )
    name = truncate(str(fn.get("name") or ""), 200)
    return ToolCall(name=name, arguments=fn.get("arguments"), result=text, error=True)


def _say_not_run(context: str, asked: int) -> None:
    sys.stderr.write(
        f"{context}: the model asked for {asked} tool calls in one reply; the first"
        f" {MAX_CALLS_PER_STEP} ran, {asked - MAX_CALLS_PER_STEP} more calls in this reply were"
        " not run (the model was told so).\n"
    )
    sys.stderr.flush()


def _say_stopped(
    context: str, steps: int, max_steps: int, pending: list[str], has_text: bool
) -> None:
    wanted = ", ".join(dict.fromkeys(pending)) or "tools"
    kept = "its partial answer is kept" if has_text else "it gave no answer text yet"
    sys.stderr.write(
        f"{context} stopped after {steps} step{'s' if steps != 1 else ''} (--max-steps"
        f" {max_steps}): the model had just called {wanted} and has not answered; {kept}."
        " Raise --max-steps to let it finish.\n"
    )
    sys.stderr.flush()
