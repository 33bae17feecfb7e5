"""The stand-in as a tool-using model, read and driven by the official ``ollama`` client:
it calls a tool while the conversation has no tool result, then answers quoting the result."""

from __future__ import annotations

import ollama

from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def weather(city: str, days: int) -> str:
    """Forecast.

    Args:
      city: where
      days: how many days
    """
    return f"sunny in {city} for {days} days"


def python(code: str) -> str:
    """Run Python code.

    Args:
      code: the source
    """
    return code


def test_a_tool_loop_with_the_official_client() -> None:
    with OllamaStandIn(models=["qwen3"]) as s:
        c = ollama.Client(host=s.url, timeout=10)
        msgs: list = [{"role": "user", "content": "What is the weather in Oslo?"}]
        r = c.chat(model="qwen3", messages=msgs, tools=[weather])
        assert r.done_reason == "stop" and not r.message.content
        (call,) = r.message.tool_calls or []
        assert call.function.name == "weather"
        args = dict(call.function.arguments)
        assert isinstance(args["city"], str) and isinstance(args["days"], int)
        result = weather(**args)
        msgs += [r.message, {"role": "tool", "content": result, "tool_name": "weather"}]
        r = c.chat(model="qwen3", messages=msgs, tools=[weather])
        assert not r.message.tool_calls
        assert r.message.content.startswith(f"[weather said: {result}]")

        # Streaming: the text arrives in pieces; the tool call comes whole, in one message.
        parts = list(c.chat(model="qwen3", messages=msgs, tools=[weather], stream=True))
        assert "".join(p.message.content or "" for p in parts) == r.message.content
        parts = list(c.chat(model="qwen3", messages=msgs[:1], tools=[weather], stream=True))
        calls = [tc for p in parts for tc in p.message.tool_calls or []]
        assert [tc.function.name for tc in calls] == ["weather"]


def test_the_named_tool_is_called_and_code_comes_from_the_prompt() -> None:
    with OllamaStandIn(models=["qwen3"]) as s:
        c = ollama.Client(host=s.url, timeout=10)
        prompt = "Use python for this:\n```python\nprint(sum(range(10)))\n```"
        r = c.chat(
            model="qwen3", messages=[{"role": "user", "content": prompt}], tools=[weather, python]
        )
        (call,) = r.message.tool_calls or []
        assert call.function.name == "python"
        assert call.function.arguments == {"code": "print(sum(range(10)))\n"}
        # A prompt that asks for a tool that is not offered gets a call of it anyway.
        ask = [{"role": "user", "content": "please call tool teleport"}]
        r = c.chat(model="qwen3", messages=ask, tools=[weather])
        (call,) = r.message.tool_calls or []
        assert call.function.name == "teleport" and call.function.arguments == {}


def test_n_times_in_the_prompt_makes_parallel_calls() -> None:
    with OllamaStandIn(models=["qwen3"]) as s:
        c = ollama.Client(host=s.url, timeout=10)
        msgs: list = [{"role": "user", "content": "weather in Oslo, 3 times"}]
        r = c.chat(model="qwen3", messages=msgs, tools=[weather])
        calls = r.message.tool_calls or []
        assert [call.function.name for call in calls] == ["weather"] * 3
