"""The work behind ``%%llm`` / ``%llm``: requests, streaming, formats, chat sessions.

Plain functions over a runtime and a user namespace, so they are testable without magics.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from IPython.display import display

from ..hub.errors import HubError, NoResourceAvailable, UserError
from .llm_schema import Schema, SchemaError, parse_json, to_jsonable
from .models_table import models_table
from .render import (
    CellError,
    CellInterrupted,
    StreamingDisplay,
    cell_error,
    footer_text,
    no_ollama_hint,
    plain_terminal,
    show_footer,
    terminal_safe,
    token_counts,
    tokens_per_second,
)
from .thinking import ThinkingDisplay, show_thinking, thinking_of, with_thinking

__all__ = ["FORMATS", "ChatStore", "LlmOptions", "LlmResult", "ask", "extract_code", "models_frame"]

FORMATS = ("markdown", "text", "code", "json")


@dataclass
class LlmOptions:
    model: str | None = None
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    fmt: str = "markdown"
    out: str | None = None
    chat: str | None = None
    stream: bool = True
    instance: str | None = None
    strategy: str | None = None
    timeout: float | None = None
    schema: Schema | None = None  # --schema: sent as format, answers validated into it
    images: list[str] = field(default_factory=list)  # --image, base64
    image_columns: list[str] = field(default_factory=list)  # --map's --image {column}
    think: bool | str | None = None  # --think [low|medium|high]


@dataclass
class LlmResult:
    text: str
    value: Any  # the text, or the parsed object for -f json, or the code for -f code
    model: str
    instance: str | None
    latency_ms: float
    tokens_per_s: float | None
    raw: dict[str, Any] = field(default_factory=dict)
    first_token_ms: float | None = None
    thinking: str = ""  # the reasoning, with --think

    @property
    def prompt_tokens(self) -> int | None:
        return token_counts(self.raw)[0]

    @property
    def completion_tokens(self) -> int | None:
        return token_counts(self.raw)[1]

    def footer(self) -> str:
        return footer_text(
            model=self.model,
            instance=self.instance,
            latency_ms=self.latency_ms,
            tokens_per_s=self.tokens_per_s,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            first_token_ms=self.first_token_ms,
        )


def _first_token_ms(raw: dict[str, Any], latency_ms: float) -> float | None:
    # Without streaming the first token is not seen arriving: the wait is the whole call
    # less the time Ollama spent generating (eval_duration, ns), as a streamed call shows it.
    dur = raw.get("eval_duration")
    if not isinstance(dur, (int, float)) or dur < 0:
        return None
    return max(0.0, latency_ms - float(dur) / 1e6)


class ChatStore:
    """Conversations by name: the message history sent with every ``--chat NAME`` turn."""

    def __init__(self) -> None:
        self.sessions: dict[str, list[dict[str, str]]] = {}

    def messages(self, name: str, system: str | None) -> list[dict[str, str]]:
        history = self.sessions.setdefault(name, [])
        if system is not None:
            # A new -s replaces the conversation's system message rather than stacking.
            if history and history[0]["role"] == "system":
                history[0] = {"role": "system", "content": system}
            else:
                history.insert(0, {"role": "system", "content": system})
        return history

    def clear(self, name: str | None = None) -> None:
        if name is None:
            self.sessions.clear()
        else:
            self.sessions.pop(name, None)


def text_of(chunk: dict[str, Any]) -> str:
    """The answer text in one Ollama chunk or finished call (generate or chat)."""
    if "response" in chunk and isinstance(chunk["response"], str):
        return chunk["response"]
    msg = chunk.get("message")
    if isinstance(msg, dict) and isinstance(msg.get("content"), str):
        return msg["content"]
    return ""


_text_of = text_of  # the name magics used before text_of was public

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.S)


def extract_code(text: str) -> str:
    """The code in a model's answer: the fenced blocks joined (the model usually wraps code
    in fences even when asked not to), else the whole answer."""
    blocks = [m.group(2).rstrip() for m in _FENCE.finditer(text)]
    return "\n\n".join(blocks) if blocks else text.strip()


def build_request(
    opts: LlmOptions, prompt: str, default_model: str, chats: ChatStore | None
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method, params, call kwargs) for one call."""
    model = opts.model or default_model
    options: dict[str, Any] = {}
    if opts.temperature is not None:
        options["temperature"] = opts.temperature
    if opts.max_tokens is not None:
        options["num_predict"] = opts.max_tokens
    params: dict[str, Any] = {"model": model}
    if options:
        params["options"] = options
    if opts.schema is not None:
        params["format"] = opts.schema.json_schema
    elif opts.fmt == "json":
        params["format"] = "json"
    if opts.think is not None:
        params["think"] = opts.think
    user: dict[str, Any] = {"role": "user", "content": prompt}
    if opts.images:
        user["images"] = list(opts.images)
    kwargs: dict[str, Any] = {}
    if opts.instance:
        kwargs["instance"] = opts.instance
    if opts.strategy:
        kwargs["strategy"] = opts.strategy
    if opts.chat:
        if chats is None:
            raise UserError("--chat needs a chat store")
        history = chats.messages(opts.chat, opts.system)
        params["messages"] = [*history, user]
        # Same conversation, same server: its KV cache already holds the history.
        params["affinity_key"] = f"chat:{opts.chat}"
        if not opts.instance and not opts.strategy:
            kwargs["strategy"] = "affinity"
        return "llm/chat", params, kwargs
    params["prompt"] = prompt
    if opts.images:
        params["images"] = list(opts.images)
    if opts.system:
        params["system"] = opts.system
    return "llm/generate", params, kwargs


def finish_value(opts: LlmOptions, text: str) -> Any:
    if opts.schema is not None:
        return opts.schema.validate(text)
    if opts.fmt == "json":
        try:
            return parse_json(text)
        except RecursionError:
            raise UserError("the model's answer is nested too deeply to read as JSON") from None
        except ValueError as exc:
            where = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else exc
            raise UserError(
                f"the model's answer is not valid JSON ({where})",
                hint="ask for JSON explicitly in the prompt, or use -f text",
            ) from None
    if opts.fmt == "code":
        return extract_code(text)
    return text


def final_bundle(opts: LlmOptions, text: str, value: Any) -> dict[str, Any]:
    if opts.fmt == "text":
        return {"text/plain": text}
    if opts.fmt == "code":
        return {"text/markdown": f"```python\n{value}\n```", "text/plain": value}
    if opts.fmt == "json":
        value = opts.schema.jsonable(value) if opts.schema is not None else to_jsonable(value)
        pretty = json.dumps(value, indent=2, ensure_ascii=False)
        return {
            "application/json": value if isinstance(value, (dict, list)) else {"value": value},
            "text/plain": pretty,
        }
    return {"text/markdown": text, "text/plain": text}


async def call_once(
    provider: Any, method: str, params: dict[str, Any], kwargs: dict[str, Any]
) -> dict[str, Any]:
    return await provider.execute(method, params, **kwargs)


def ask(
    runtime: Any,
    prompt: str,
    opts: LlmOptions,
    *,
    default_model: str,
    chats: ChatStore | None = None,
    interval: float = 0.1,
    show: bool = True,
    hosts: list[str] | None = None,
    context: str = "%%llm",
) -> LlmResult:
    """One prompt: streamed into a display handle (``show``), or a single call.

    ``context`` names the magic in error lines (``%%llm`` or ``%llm``).
    """
    method, params, kwargs = build_request(opts, prompt, default_model, chats)
    if opts.timeout:
        kwargs["timeout"] = opts.timeout
    start = time.perf_counter()
    raw: dict[str, Any] = {}
    instance: str | None = None
    error: BaseException | None = None
    interrupted = False
    view: StreamingDisplay | None = None
    thoughts: ThinkingDisplay | None = None
    first_at: float | None = None
    try:
        provider = runtime.llm(params.get("model"))
        if opts.stream and show:
            # Created first, so the reasoning sits above the answer.
            thoughts = ThinkingDisplay(interval) if opts.think else None
            view = StreamingDisplay(opts.fmt, interval)
            for chunk in runtime.stream(lambda: provider.stream(method, params, **kwargs)):
                piece, thought = text_of(chunk), thinking_of(chunk)
                if (piece or thought) and first_at is None:
                    first_at = time.perf_counter()  # reasoning is generated output too
                if thoughts is not None:
                    thoughts.append(thought)
                    if piece:
                        thoughts.finish()
                view.append(piece)
                instance = chunk.get("instance") or instance
                if chunk.get("done"):
                    raw = chunk
            view.flush()
            text = view.text
        else:
            raw = runtime.run(call_once(provider, method, params, kwargs))
            text = text_of(raw)
            instance = raw.get("instance")
    except KeyboardInterrupt:
        interrupted = True
    except Exception as exc:
        error = exc
    if thoughts is not None:
        thoughts.finish()  # whatever happened, the reasoning so far is complete
    # Raised outside the except blocks so no library exception rides along as __context__.
    if interrupted:
        if view is not None:
            view.flush()
        raise CellInterrupted(
            f"{context} stopped; the request to the model was cancelled"
        ) from None
    if error is not None:
        if view is not None and not view.text:
            view.finish({"text/plain": ""})
        hint = no_ollama_hint(hosts or []) if _is_unreachable(error) else None
        raise cell_error(error, context=context, hint=hint) from None
    latency_ms = (time.perf_counter() - start) * 1000.0
    instance = instance or raw.get("instance")
    thinking = thoughts.text if thoughts is not None else thinking_of(raw)
    try:
        value = with_thinking(finish_value(opts, text), thinking)
    except HubError as exc:
        if view is not None:
            view.finish()
        exc.instance = exc.instance or instance
        if isinstance(exc, SchemaError):
            exc.thinking = thinking  # shown only if streamed: kept with the raw answer
        raise cell_error(exc, context=context) from None
    if opts.chat and chats is not None:
        history = chats.messages(opts.chat, None)
        history.append(params["messages"][-1])
        turn = {"role": "assistant", "content": text}
        if thinking:
            turn["thinking"] = thinking  # sent back, as Ollama's CLI does; templates decide
        history.append(turn)
    if view is not None:
        view.finish(final_bundle(opts, text, value))
    result = LlmResult(
        text=text,
        value=value,
        model=str(params["model"]),
        instance=instance,
        latency_ms=latency_ms,
        tokens_per_s=tokens_per_second(raw),
        raw=raw,
        first_token_ms=(
            (first_at - start) * 1000.0
            if first_at is not None
            else _first_token_ms(raw, latency_ms)
        ),
        thinking=thinking,
    )
    return result


def _is_unreachable(exc: BaseException) -> bool:
    # The Ollama hint only for the Ollama pool (the router tags which pool failed).
    return isinstance(exc, NoResourceAvailable) and getattr(exc, "pool", "ollama") == "ollama"


def show_result(opts: LlmOptions, result: LlmResult) -> None:
    """Render a finished (non-streamed) result and its footer."""
    show_thinking(result.thinking)
    bundle = final_bundle(opts, result.text, result.value)
    if plain_terminal():
        # Printed as is by the terminal: the model's text, without its control sequences.
        bundle = {"text/plain": terminal_safe(str(bundle["text/plain"]))}
    display(bundle, raw=True)


def _nobody_answered(res: Any, hosts: list[str]) -> NoResourceAvailable | None:
    # An empty table would read as "no models pulled" when in truth no server answered.
    reach = res.get("instances") if isinstance(res, dict) else None
    if not isinstance(reach, dict) or any(
        isinstance(v, dict) and v.get("reachable") for v in reach.values()
    ):
        return None
    tried = ", ".join(reach) if reach else "no instance in the pool"
    return NoResourceAvailable(
        f"no Ollama server answered (tried: {tried})", hint=no_ollama_hint(hosts)
    )


def models_frame(runtime: Any, hosts: list[str] | None = None) -> pd.DataFrame:
    """The pool's models: which instances have each, and where it is loaded."""
    error: BaseException | None = None
    try:
        provider = runtime.llm()
        res = runtime.run(provider.execute("llm/models", {}))
    except KeyboardInterrupt:
        raise CellInterrupted("%llm models was cancelled") from None
    except Exception as exc:
        error = exc
    if error is not None:
        hint = no_ollama_hint(hosts or []) if _is_unreachable(error) else None
        raise cell_error(error, context="%llm models", hint=hint) from None
    nobody = _nobody_answered(res, hosts or [])
    if nobody is not None:
        raise cell_error(nobody, context="%llm models") from None
    rows = res.get("models", []) if isinstance(res, dict) else res
    return models_table([r for r in rows if isinstance(r, dict)])


def store(ns: MutableMapping[str, Any], name: str | None, value: Any) -> None:
    if not name:
        return
    if not name.isidentifier():
        raise CellError(f"-o {name!r} is not a valid Python variable name", kind="UsageError")
    ns[name] = value


def print_footer(result: LlmResult) -> None:
    show_footer(result.footer())
