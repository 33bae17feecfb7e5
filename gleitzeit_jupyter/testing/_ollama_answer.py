"""What a stand-in answers: tokens, thoughts and tool calls for a request, Ollama's
capability refusals, and the pace tokens are due at."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from typing import Any

from ._ollama_model import Faults, generate_tokens, off_schema_json, shaped_json

__all__ = ["Pace", "answer", "refusal"]


def answer(
    model: str,
    text: str,
    options: dict[str, Any],
    body: dict[str, Any],
    chat: bool,
    default_tokens: int,
    faults: Faults | None = None,
) -> tuple[list[str], list[str], list[dict[str, Any]], str]:
    """(answer tokens, thinking tokens, tool calls, done_reason) for one request."""
    tokens, reason = generate_tokens(model, text, options, default_tokens)
    fmt = body.get("format")
    if fmt and tokens:
        words = "".join(tokens).split()
        if isinstance(fmt, dict) and faults is not None and faults.off_schema(text):
            shaped = off_schema_json(fmt)
        elif fmt == "json":
            shaped = {"response": " ".join(words)}
        else:
            shaped = shaped_json(fmt, words)
        tokens = [json.dumps(shaped)]
    thoughts: list[str] = []
    if body.get("think"):
        thoughts, _ = generate_tokens(model, "think\0" + text, options, default_tokens)
    calls: list[dict[str, Any]] = []
    if chat:
        tokens, calls = _tool_turn(body, tokens)
    if calls:
        reason = "stop"
    return tokens, thoughts, calls, reason


def refusal(caps: list[str], name: str, body: dict[str, Any], chat: bool) -> str | None:
    """Ollama's 400 for a request the model cannot serve (its capability checks)."""
    if "completion" not in caps:
        return f'"{name}" does not support generate'
    images = body.get("images") or []
    if chat:
        images = [i for m in body.get("messages") or [] for i in (m.get("images") or [])]
    if images:
        if not all(_is_base64(i) for i in images):
            return "illegal base64 data in images"
        if "vision" not in caps:
            return f'"{name}" does not support images'
    if body.get("think") and "thinking" not in caps:
        return f'"{name}" does not support thinking'
    if body.get("tools") and "tools" not in caps:
        return f'"{name}" does not support tools'
    if body.get("suffix") and "insert" not in caps:
        return f'"{name}" does not support insert'
    return None


class Pace:
    """Sleeps until token ``n`` is due, ``n x per_tok`` seconds after ``start``."""

    def __init__(self, start: float, per_tok: float) -> None:
        self.start = start
        self.per_tok = per_tok

    async def until(self, n: int) -> None:
        if self.per_tok:
            delay = self.start + n * self.per_tok - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _tool_turn(body: dict[str, Any], tokens: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """A deterministic tool-using model: (answer tokens, tool calls).

    Once the conversation holds a tool result after the last user message, it answers, and
    its answer quotes the results (so a test can see they came back); else, when tools are
    offered, it calls one: the tool the user's message names, or the first.
    """
    msgs = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
    results = [m for m in msgs[last_user + 1 :] if m.get("role") == "tool"]
    if results and body.get("format"):
        return tokens, []  # a structured answer stays valid JSON
    if results:
        quoted = " ".join(
            f"[{m.get('tool_name') or 'tool'} said: {str(m.get('content', ''))[:200]}]"
            for m in results
        )
        words = re.findall(r"\s*\S+", quoted)
        return [*words, *(" " + t.lstrip() for t in tokens)], []
    prompt = str(msgs[last_user].get("content", "")) if last_user >= 0 else ""
    calls = _tool_calls(body.get("tools"), tokens, prompt)
    return ([] if calls else tokens), calls


_FENCED = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_ASKED = re.compile(r"\bcall tool `?([A-Za-z_][\w-]*)`?")
_TIMES = re.compile(r"\b(\d{1,4}) times\b")


def _tool_calls(tools: Any, tokens: list[str], prompt: str = "") -> list[dict[str, Any]]:
    """A call of the tool named in ``prompt`` (else the first offered), its arguments shaped
    by the tool's parameters; a string parameter named ``code`` gets the prompt's first
    fenced code block (else a one-line print), so a code tool receives code that runs.
    ``call tool NAME`` in the prompt calls NAME even when it is not offered; ``N times``
    makes N parallel calls in the one reply, as models may."""
    if not isinstance(tools, list):
        return []
    offered = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    if not offered:
        return []
    asked = _ASKED.search(prompt)
    if asked and asked.group(1) not in {f.get("name") for f in offered}:
        # Real models do invent tool names; "call tool NAME" makes this one do it.
        return [{"function": {"name": asked.group(1), "arguments": {}}}]
    named = [
        f for f in offered if f.get("name") and re.search(rf"\b{re.escape(f['name'])}\b", prompt)
    ]
    fn = (named or offered)[0]
    params = fn.get("parameters") or {"type": "object"}
    words = "".join(tokens).split()
    args = shaped_json(params, words)
    args = args if isinstance(args, dict) else {}  # arguments are always an object
    code_prop = (params.get("properties") or {}).get("code") if isinstance(params, dict) else None
    if isinstance(code_prop, dict) and code_prop.get("type") == "string":
        block = _FENCED.search(prompt)
        args["code"] = block.group(1) if block else f"print({' '.join(words)!r})"
    times = _TIMES.search(prompt)
    n = int(times.group(1)) if times else 1
    return [{"function": {"name": fn.get("name", "tool"), "arguments": args}} for _ in range(n)]
