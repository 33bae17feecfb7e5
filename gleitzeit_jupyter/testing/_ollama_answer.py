"""What a stand-in answers: tokens, thoughts and tool calls for a request, Ollama's
capability refusals, and the pace tokens are due at."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
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
    calls = _tool_calls(body.get("tools"), tokens) if chat else []
    if calls:
        tokens = []
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


def _tool_calls(tools: Any, tokens: list[str]) -> list[dict[str, Any]]:
    """A call of the first tool offered, its arguments shaped by the tool's parameters."""
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return []
    fn = tools[0].get("function") or {}
    args = shaped_json(fn.get("parameters") or {"type": "object"}, "".join(tokens).split())
    args = args if isinstance(args, dict) else {}  # arguments are always an object
    return [{"function": {"name": fn.get("name", "tool"), "arguments": args}}]
