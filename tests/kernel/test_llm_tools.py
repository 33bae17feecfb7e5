"""%%llm --tools through a real InteractiveShell against the Ollama stand-in (and, for
--tools sandbox, the real docker engine)."""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Literal

import docker
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.llm_tools import ToolError, tool_from_function
from gleitzeit_jupyter.kernel.tool_loop import ToolsResult, ask_with_tools, build_tools
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

ADD = '''
calls = []
def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: the first number
        b: the second number
    """
    calls.append((a, b))
    return a + 1000 * b
'''


def chats(srv: OllamaStandIn, since: int) -> list[dict]:
    return [r.body for r in srv.requests_to("/api/chat")[since:]]


def tool_lines(cell) -> list[str]:
    """The final text of each tool-call display (its in-place updates share the metadata
    of the first display only, so the last plain text per display is taken by position)."""
    shown = [o.data["text/plain"] for o in cell.outputs if "text/plain" in o.data]
    return [t for t in shown if t.startswith("tool ") and not t.endswith("⟶ …")]


def test_kernel_function_loop_sends_schema_runs_tool_and_returns_result_to_model(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    assert run(shell, ADD).error is None
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools add -o ans\nWhat is 2 + 3?")
    assert cell.error is None, cell.text
    first, second = chats(standin, before)
    (spec,) = first["tools"]
    assert spec == {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two whole numbers.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "description": "the first number"},
                    "b": {"type": "integer", "description": "the second number"},
                },
                "required": ["a", "b"],
            },
        },
    }
    assert first["messages"] == [{"role": "user", "content": "What is 2 + 3?"}]
    # The tool ran in the kernel with the model's arguments; its result went back.
    ((a, b),) = shell.user_ns["calls"]
    expected = str(a + 1000 * b)
    call_msg, tool_msg = second["messages"][1:]
    assert call_msg["role"] == "assistant"
    assert call_msg["tool_calls"] == [{"function": {"name": "add", "arguments": {"a": a, "b": b}}}]
    assert tool_msg == {"role": "tool", "content": expected, "tool_name": "add"}
    # The model's answer quotes the result (the stand-in does), and -o holds that answer.
    answer = shell.user_ns["ans"]
    assert f"[add said: {expected}]" in answer
    assert cell.data("text/markdown")[-1] == answer
    assert tool_lines(cell) == [f"tool add(a={a}, b={b}) ⟶ {expected}"]


def test_raising_tool_tells_the_model_and_the_loop_goes_on(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(shell, "def lookup(key: str) -> str:\n    raise KeyError(f'no entry {key}')\n")
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools lookup -o ans\nLook something up")
    assert cell.error is None, cell.text
    _, second = chats(standin, before)
    tool_msg = second["messages"][-1]
    assert tool_msg["role"] == "tool" and tool_msg["tool_name"] == "lookup"
    assert tool_msg["content"].startswith("KeyError: 'no entry ")
    assert "[lookup said: KeyError: 'no entry" in shell.user_ns["ans"]
    (line,) = tool_lines(cell)
    assert line.startswith("tool lookup(key=") and "⟶ error: KeyError: 'no entry" in line


def test_an_unknown_tool_name_is_answered_with_an_error(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(shell, ADD)
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools add -o ans\nplease call tool teleport")
    assert cell.error is None, cell.text
    _, second = chats(standin, before)
    told = "error: there is no tool named 'teleport'; the tools are: add"
    assert second["messages"][-1] == {"role": "tool", "content": told, "tool_name": "teleport"}
    assert tool_lines(cell) == [f"tool teleport() ⟶ {told}"]
    assert shell.user_ns["calls"] == []


def test_long_results_are_cut_with_a_marker(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(shell, "def dump() -> str:\n    return 'x' * 10_000\n")
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools dump\nDump it")
    assert cell.error is None, cell.text
    _, second = chats(standin, before)
    marker = "… [truncated: 10,000 characters in all]"
    assert second["messages"][-1]["content"] == "x" * 4000 + marker  # what the model reads
    assert tool_lines(cell) == ["tool dump() ⟶ " + "x" * 300 + marker]  # what the cell shows


def test_the_model_calls_the_tool_its_prompt_names(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(shell, ADD + "\ndef shout(text: str) -> str:\n    return text.upper()\n")
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools add,shout\nPlease shout this")
    assert cell.error is None, cell.text
    first, second = chats(standin, before)
    assert [t["function"]["name"] for t in first["tools"]] == ["add", "shout"]
    (call,) = second["messages"][1]["tool_calls"]
    assert call["function"]["name"] == "shout"
    text = call["function"]["arguments"]["text"]
    assert second["messages"][2]["content"] == text.upper()
    assert shell.user_ns["calls"] == []


def test_max_steps_stops_the_loop_and_says_so(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(shell, ADD)
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools add --max-steps 1 -o ans\nAdd things")
    assert cell.error is None, cell.text
    assert len(chats(standin, before)) == 1  # one model reply, then the bound
    assert len(shell.user_ns["calls"]) == 1  # the tool it asked for still ran
    assert "stopped after 1 step (--max-steps 1)" in cell.stderr
    assert "called add" in cell.stderr and "Raise --max-steps" in cell.stderr
    assert shell.user_ns["ans"] == ""  # no answer text yet: nothing invented


def test_max_steps_is_validated_and_needs_tools(shell: InteractiveShell) -> None:
    run(shell, ADD)
    for src, msg in [
        ("%%llm --tools add --max-steps 0\nx", "--max-steps: 0 is too small"),
        ("%%llm --tools add --max-steps many\nx", "is not a whole number"),
        ("%%llm --max-steps 3\nx", "--max-steps only applies with --tools"),
        ("%%llm --tools 'a b'\nx", "'a b' is not a function name"),
        ("%%llm --tools nothing_here\nx", "no function 'nothing_here' in the notebook"),
        ("%%llm --map [1] --tools add\n{item}", "do not apply with --map"),
    ]:
        cell = run(shell, src)
        assert cell.error is not None, src
        assert msg in str(cell.error), (src, cell.error)


def test_chat_keeps_tool_turns_in_the_history(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(shell, ADD)
    shell.run_cell("%gleitzeit reset")
    cell = run(shell, "%%llm --chat calc --tools add -s 'You add.'\nWhat is 2 + 3?")
    assert cell.error is None, cell.text
    ((a, b),) = shell.user_ns["calls"]
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --chat calc\nAnd doubled?")
    assert cell.error is None, cell.text
    (body,) = chats(standin, before)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "add",
        "arguments": {"a": a, "b": b},
    }
    assert body["messages"][3] == {
        "role": "tool",
        "content": str(a + 1000 * b),
        "tool_name": "add",
    }
    assert f"[add said: {a + 1000 * b}]" in body["messages"][4]["content"]
    assert "tools" not in body  # tools are per cell; the history is what stays


def test_line_form_returns_the_answer_and_shows_the_calls(shell: InteractiveShell) -> None:
    run(shell, ADD)
    cell = run(shell, "x = %llm --tools add What is 2 + 3?")
    assert cell.error is None, cell.text
    ((a, b),) = shell.user_ns["calls"]
    assert shell.user_ns["x"].startswith(f"[add said: {a + 1000 * b}]")
    assert tool_lines(cell) == [f"tool add(a={a}, b={b}) ⟶ {a + 1000 * b}"]


def test_the_readme_tools_cell_runs_as_pasted(shell: InteractiveShell) -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "magics.md"
    (block,) = re.findall(
        r"<!-- test: run this cell -->\n```python\n(.*?)```", doc.read_text(), re.S
    )
    assert "%llm --tools word_count" in block
    cell = run(shell, block)
    assert cell.error is None, cell.text
    (line,) = tool_lines(cell)
    count = int(line.rsplit(" ⟶ ", 1)[1])
    assert line.startswith("tool word_count(text=")
    assert f"[word_count said: {count}]" in cell.stdout


def test_help_lists_the_tool_options(shell: InteractiveShell) -> None:
    doc = shell.find_cell_magic("llm").__doc__
    assert "--tools f,g|sandbox" in doc and "--max-steps N" in doc
    assert "python tool that runs code in the sandbox" in " ".join(doc.split())


def test_without_a_cell_the_loop_is_a_plain_function(standin: OllamaStandIn) -> None:
    from gleitzeit_jupyter.kernel.llm import LlmOptions
    from gleitzeit_jupyter.kernel.runtime import Gleitzeit, Runtime

    seen: list[int] = []

    def square(n: int) -> int:
        """Square a number."""
        seen.append(n)
        return n * n

    cfg = Gleitzeit(ollama_hosts=[standin.url])
    rt = Runtime(cfg)
    try:
        tools = build_tools(["square"], {"square": square}, rt, sandbox_timeout=None)
        res = ask_with_tools(
            rt,
            "square it",
            LlmOptions(stream=False),
            tools,
            default_model="llama3.2",
            show=False,
            show_calls=False,
        )
    finally:
        rt.shutdown()
    assert isinstance(res, ToolsResult) and res.steps == 2 and res.stopped is None
    (call,) = res.calls
    assert call.name == "square" and call.result == str(seen[0] ** 2) and not call.error
    assert f"[square said: {seen[0] ** 2}]" in res.text
    replies = [r.body for r in standin.requests_to("/api/chat")[-2:]]
    assert all(b["tools"][0]["function"]["name"] == "square" for b in replies)


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def forecast(
    city: str,
    days: int = 3,
    unit: Unit = Unit.C,
    hours: list[int] | None = None,
    *,
    detail: Literal["low", "high"] = "low",
) -> str:
    """Weather forecast.

    :param city: where
    :param days: how many days ahead
    """
    return f"{city}:{days}:{unit.value}:{hours}:{detail}"


def test_schema_from_hints_and_rest_docstring() -> None:
    tool = tool_from_function("forecast", forecast)
    assert tool.description == "Weather forecast."
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "where"},
            "days": {"type": "integer", "description": "how many days ahead"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "hours": {"type": ["array", "null"], "items": {"type": "integer"}},
            "detail": {"type": "string", "enum": ["low", "high"]},
        },
        "required": ["city"],
    }


def test_arguments_are_coerced_and_checked() -> None:
    tool = tool_from_function("forecast", forecast)
    assert tool.run({"city": "Oslo", "days": "5", "unit": "fahrenheit", "hours": ["1"]}) == (
        "Oslo:5:fahrenheit:[1]:low"
    )
    with pytest.raises(ToolError, match=r"days: Input should be a valid integer.*\(got soon\)"):
        tool.run({"city": "Oslo", "days": "soon"})
    with pytest.raises(ToolError, match="city: missing"):
        tool.run({})
    with pytest.raises(ToolError, match="colour: no such parameter"):
        tool.run({"city": "Oslo", "colour": "red"})
    with pytest.raises(ToolError, match="detail: Input should be 'low' or 'high'"):
        tool.run({"city": "Oslo", "detail": "max"})


def test_numpy_docstring_and_a_value_that_is_not_a_function() -> None:
    def mean(values: list[float], skip_nan: bool = True) -> float:
        """Mean of the values.

        Parameters
        ----------
        values : list of float
            The numbers.
        skip_nan : bool
            Ignore NaN.
        """
        return sum(values) / len(values)

    tool = tool_from_function("mean", mean)
    props = tool.parameters["properties"]
    assert props["values"] == {
        "type": "array",
        "items": {"type": "number"},
        "description": "The numbers.",
    }
    assert props["skip_nan"] == {"type": "boolean", "description": "Ignore NaN."}
    assert tool.run({"values": [1, "2", 3.0]}) == 2.0
    with pytest.raises(UserError, match="'n' is a int, not a function"):
        tool_from_function("n", 3)


@pytest.mark.docker
def test_sandbox_tool_runs_the_models_code_in_the_sandbox_not_the_kernel(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    docker.from_env().ping()  # no engine: fail here, loudly
    shell.user_ns.pop("made_by_model", None)
    run(shell, ADD)
    before = len(standin.requests_to("/api/chat"))
    src = (
        "%%llm --tools sandbox,add -o ans\n"
        "Use python to run this:\n"
        "```python\nimport os\nmade_by_model = 6 * 7\nprint('answer', made_by_model)\n"
        "print(os.getpid() != {pid})\nmade_by_model\n```"
    )
    cell = run(shell, src.replace("{pid}", str(__import__("os").getpid())))
    assert cell.error is None, cell.text
    first, second = chats(standin, before)
    assert [t["function"]["name"] for t in first["tools"]] == ["python", "add"]
    (call,) = second["messages"][1]["tool_calls"]
    assert call["function"]["name"] == "python"
    assert "made_by_model = 6 * 7" in call["function"]["arguments"]["code"]
    # Shown as %%sandbox shows a run: stdout in the cell, the result, the sandbox footer.
    assert "answer 42\nTrue\n" in cell.stdout
    assert "42" in cell.data("text/plain")
    assert cell.footer is not None and cell.footer.startswith("sandbox · ")
    # The model read it back; the kernel never ran it.
    tool_msg = second["messages"][2]
    assert tool_msg["tool_name"] == "python"
    assert tool_msg["content"] == "stdout:\nanswer 42\nTrue\nresult:\n42"
    assert "[python said: stdout: answer 42 True result: 42]" in " ".join(
        shell.user_ns["ans"].split()
    )
    assert "made_by_model" not in shell.user_ns
    assert shell.user_ns["calls"] == []

    # An exception in the model's code: shown like %%sandbox's, told to the model, loop goes on.
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools sandbox\nRun:\n```python\nprint('before')\n1 / 0\n```")
    assert cell.error is None, cell.text
    assert "--- raised in the sandbox" in cell.stderr and "ZeroDivisionError" in cell.stderr
    _, second = chats(standin, before)
    content = second["messages"][2]["content"]
    assert content.startswith("stdout:\nbefore\nerror: ZeroDivisionError: division by zero")


@pytest.mark.docker
def test_python_tool_keeps_variables_between_calls_of_one_cell(shell: InteractiveShell) -> None:
    docker.from_env().ping()
    run(shell, "%sandbox print('warm')")  # the cell's runtime and pool, as a user has them
    src = (
        "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
        "from gleitzeit_jupyter.kernel.tool_loop import build_tools\n"
        "(tool,) = build_tools(['sandbox'], {}, get_runtime(), sandbox_timeout=30)\n"
        "try:\n"
        "    first = tool.run({'code': 'x = 41'})\n"
        "    second = tool.run({'code': 'print(x + 1)'})\n"
        "finally:\n"
        "    tool.close()\n"
    )
    cell = run(shell, src)
    assert cell.error is None, cell.text
    assert shell.user_ns["first"] == "(the code ran and printed nothing)"
    assert shell.user_ns["second"] == "stdout:\n42"
    assert "x" not in shell.user_ns or shell.user_ns["x"] != 41


@pytest.mark.docker
def test_python_tool_has_the_sandbox_time_limit(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    docker.from_env().ping()
    run(shell, "%config Gleitzeit.sandbox_timeout = 2.0")
    try:
        before = len(standin.requests_to("/api/chat"))
        cell = run(shell, "%%llm --tools sandbox\nRun:\n```python\nwhile True:\n    pass\n```")
    finally:
        run(shell, "%config Gleitzeit.sandbox_timeout = 30.0")
    assert cell.error is None, cell.text
    _, second = chats(standin, before)
    told = second["messages"][-1]["content"]
    assert told == "error: the run exceeded its 2 s timeout and was stopped"
    assert "Timeout: %%sandbox: the run exceeded its 2 s timeout" in cell.text  # as %%sandbox
