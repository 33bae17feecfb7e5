"""%%llm --tools when the model, or the tool, misbehaves: every tool call the model makes is
untrusted input, and whatever a tool does, the loop answers the model and the cell ends
cleanly (through a real InteractiveShell, the Ollama stand-in and the real docker engine)."""

from __future__ import annotations

import _thread
import sys
import threading
import warnings

import docker
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.llm_tools import ToolError, describe_value, tool_from_function
from gleitzeit_jupyter.kernel.runtime import get_runtime
from gleitzeit_jupyter.kernel.tool_display import CallView
from gleitzeit_jupyter.kernel.tool_loop import MAX_CALLS_PER_STEP
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def told(srv: OllamaStandIn) -> dict:
    """The tool message of the last chat request (what the model was told)."""
    return srv.requests_to("/api/chat")[-1].body["messages"][-1]


def shown(cell) -> list[str]:
    return [o.data["text/plain"] for o in cell.outputs if "text/plain" in o.data]


@pytest.mark.parametrize(
    ("raise_", "expected"),
    [("SystemExit(2)", "SystemExit: 2"), ("Odd('boom')", "Odd: boom")],
)
def test_a_tool_raising_a_base_exception_is_told_to_the_model(
    shell: InteractiveShell, standin: OllamaStandIn, raise_: str, expected: str
) -> None:
    # argparse and click exit with SystemExit on bad input: a bad argument from the model.
    run(shell, f"class Odd(BaseException): pass\ndef quit_(x: int):\n    raise {raise_}\n")
    cell = run(shell, "%%llm --tools quit_ -o ans\ncall quit_")
    assert cell.error is None, cell.text
    assert told(standin) == {"role": "tool", "content": expected, "tool_name": "quit_"}
    assert f"[quit_ said: {expected}]" in shell.user_ns["ans"]
    assert not any(t.endswith("⟶ …") for t in shown(cell)[1:])  # the call display finished


def test_a_tool_whose_own_llm_call_fails_is_told_to_the_model(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    run(
        shell,
        "def ask(q: str) -> str:\n    return get_ipython().run_line_magic('llm', '-m nope hi')\n",
    )
    cell = run(shell, "%%llm --tools ask -o ans\ncall ask")
    assert cell.error is None, cell.text
    content = told(standin)["content"]
    assert content.startswith("UserError: %llm: model 'nope' is not on any Ollama instance")
    assert "[ask said: UserError: %llm: model 'nope'" in shell.user_ns["ans"]


def test_an_async_function_tool_is_awaited(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    run(
        shell,
        "import asyncio\nasync def twice(x: int) -> int:\n"
        "    await asyncio.sleep(0)\n    return 2 * x\n",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine was never awaited"
        cell = run(shell, "%%llm --tools twice -o ans\ncall twice")
    assert cell.error is None, cell.text
    x = standin.requests_to("/api/chat")[-1].body["messages"][1]["tool_calls"][0]["function"][
        "arguments"
    ]["x"]
    assert told(standin)["content"] == str(2 * x)
    assert "coroutine" not in cell.text


def test_a_generator_function_is_refused_before_any_call(shell: InteractiveShell) -> None:
    run(shell, "def gen(x: int):\n    yield x\n")
    cell = run(shell, "%%llm --tools gen\ncall gen")
    assert isinstance(cell.error, UserError)
    assert "gen is a generator function" in str(cell.error)


@pytest.mark.parametrize("pname", ["_private", "model_config", "schema", "json", "model_name"])
def test_any_parameter_name_can_be_called(pname: str) -> None:
    ns: dict = {}
    exec(f"def f({pname}: int, other: str = 'd'):\n    return ({pname}, other)", ns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic's "shadows an attribute" must not reach cells
        tool = tool_from_function("f", ns["f"])
    assert tool.parameters["required"] == [pname]
    assert tool.run({pname: "3"}) == (3, "d")
    assert tool.run({pname: 4, "other": "x"}) == (4, "x")


def test_a_call_with_thousands_of_arguments_is_shown_on_one_short_line(
    shell: InteractiveShell,
) -> None:
    shell.user_ns["CallView"] = CallView
    cell = run(
        shell, "v = CallView('many', {f'k{i}': i for i in range(3000)})\nv.done('ok', False)"
    )
    assert cell.error is None, cell.text
    for text in shown(cell):
        assert len(text) < 1000, len(text)
        assert text.startswith("tool many(k0=0, k1=1")
    assert "3,000 arguments" in shown(cell)[-1]


def _held_sessions() -> set[str]:
    rows = get_runtime().sandbox().status()["instances"]
    return {r["session"] for r in rows if (r.get("session") or "").startswith("llm-tools-")}


@pytest.mark.docker
def test_a_tools_sandbox_cell_leaves_no_container_held(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    docker.from_env().ping()
    run(shell, "%sandbox print('warm')")
    held = _held_sessions()
    for _ in range(2):
        cell = run(shell, "%%llm --tools sandbox\nRun:\n```python\nx = 1\nprint(x)\n```")
        assert cell.error is None, cell.text
        assert _held_sessions() == held  # the cell's session gave its container back


@pytest.mark.docker
def test_interrupting_a_sandbox_tool_stops_the_run_and_frees_its_container(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    docker.from_env().ping()
    run(shell, "%sandbox print('warm')")
    held = _held_sessions()
    stop = threading.Event()

    def interrupt_once_started() -> None:
        # The stop button, pressed while the model's code runs (it has printed 'started').
        while not stop.is_set():
            if "started" in getattr(sys.stdout, "getvalue", lambda: "")():
                _thread.interrupt_main()
                return
            stop.wait(0.05)

    watcher = threading.Thread(target=interrupt_once_started, daemon=True)
    watcher.start()
    try:
        src = (
            "%%llm --tools sandbox\nRun:\n```python\nimport time\n"
            "print('started', flush=True)\ntime.sleep(120)\n```"
        )
        cell = run(shell, src)
    finally:
        stop.set()
        watcher.join()
    assert isinstance(cell.error, KeyboardInterrupt), cell.text
    assert "stopped while the tool 'python' ran" in cell.text
    assert _held_sessions() == held
    assert run(shell, "%%sandbox\nprint('next')").stdout == "next\n"  # the pool still serves


def test_interrupted_in_a_tool_the_cell_stops_and_the_chat_keeps_no_half_turn(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    # The stop button pressed while a kernel function runs: the tool itself gets the
    # KeyboardInterrupt, as it would from SIGINT.
    run(
        shell,
        "import _thread, time\ndef slow(x: int) -> int:\n"
        "    _thread.interrupt_main()\n    time.sleep(5)\n    return x\n",
    )
    shell.run_cell("%gleitzeit reset")
    cell = run(shell, "%%llm --chat half --tools slow\ncall slow")
    assert isinstance(cell.error, KeyboardInterrupt), cell.text
    assert "stopped while the tool 'slow' ran" in cell.text
    assert shown(cell)[-1].endswith("⟶ error: interrupted")  # not left at '…'
    cell = run(shell, "%%llm --chat half\nhello again")
    assert cell.error is None, cell.text
    body = standin.requests_to("/api/chat")[-1].body
    assert [m["role"] for m in body["messages"]] == ["user"]  # no call without its answer


def test_a_reply_with_a_flood_of_calls_runs_only_the_first_few(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    # --max-steps bounds replies; one reply may still hold hundreds of calls (40 here keeps
    # the stand-in's answer, which quotes every result, short).
    run(shell, "ran = []\ndef note(x: int) -> int:\n    ran.append(x)\n    return len(ran)\n")
    before = len(standin.requests_to("/api/chat"))
    cell = run(shell, "%%llm --tools note -o ans\ncall note 40 times")
    assert cell.error is None, cell.text
    _, second = [r.body for r in standin.requests_to("/api/chat")[before:]]
    assert len(second["messages"][1]["tool_calls"]) == 40
    assert len(shell.user_ns["ran"]) == MAX_CALLS_PER_STEP
    answers = second["messages"][2:]
    assert len(answers) == 40  # every call is answered, as the chat API expects
    assert answers[MAX_CALLS_PER_STEP - 1]["content"] == str(MAX_CALLS_PER_STEP)
    skipped = answers[MAX_CALLS_PER_STEP]["content"]
    assert skipped == (
        f"error: not run: at most {MAX_CALLS_PER_STEP} tool calls are run per reply;"
        " call it again in your next reply"
    )
    assert f"{40 - MAX_CALLS_PER_STEP} more calls in this reply were not run" in cell.stderr


FORGE = (
    "class Page:\n"
    "    def _repr_html_(self):\n"
    "        return '<b>bold</b><script>alert(1)</script><img src=x onerror=alert(2)>'\n"
    "    def _repr_javascript_(self):\n"
    "        return 'alert(3)'\n"
    "Page()\n"
)


@pytest.mark.docker
def test_the_models_html_is_sanitised_exactly_as_sandbox_does(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    docker.from_env().ping()
    by_sandbox = run(shell, f"%%sandbox\n{FORGE}")
    assert by_sandbox.error is None, by_sandbox.text
    by_tool = run(shell, f"%%llm --tools sandbox\nRun:\n```python\n{FORGE}```")
    assert by_tool.error is None, by_tool.text

    def pages(cell) -> list[tuple[list[str], str]]:
        found = [o.data for o in cell.outputs if "<b>bold</b>" in str(o.data)]
        # (the python tool's own display of the code is not the run's output)
        return [(sorted(d), d.get("text/html", "")) for d in found if "<pre>" not in str(d)]

    expected = pages(by_sandbox)
    assert expected and pages(by_tool) == expected
    ((mimes, page),) = expected
    assert mimes == ["text/html", "text/plain"] and page == "<b>bold</b>"


def test_arguments_and_results_nested_too_deep_for_json_are_described_not_raised() -> None:
    deep: list = [1]
    for _ in range(100_000):
        deep = [deep]

    def total(xs: list[int]) -> int:
        return sum(xs)

    tool = tool_from_function("total", total)
    with pytest.raises(ToolError, match=r"invalid arguments for total: xs\.0: "):
        tool.run({"xs": deep})
    assert describe_value(deep, 60).startswith("[[[")  # a tool returning it is not an error


def test_a_server_killed_between_steps_fails_over_and_the_tool_ran_once(
    shell: InteractiveShell, standin: OllamaStandIn, standin2: OllamaStandIn
) -> None:
    servers = [standin, standin2]
    run(shell, f"%config Gleitzeit.ollama_hosts = ['{standin.url}', '{standin2.url}']")
    seen = [len(s.requests_to("/api/chat")) for s in servers]
    ran: list[int] = []
    killed: list[OllamaStandIn] = []

    def kill(x: int) -> str:
        """Take down the server that asked for this call."""
        ran.append(x)
        served = next(
            s for s, n in zip(servers, seen, strict=True) if len(s.requests_to("/api/chat")) > n
        )
        served.down()
        killed.append(served)
        return "done"

    shell.user_ns["kill"] = kill
    try:
        cell = run(shell, "%%llm --tools kill -o ans\ncall kill")
    finally:
        for s in killed:
            s.up()
    assert cell.error is None, cell.text
    assert len(ran) == 1 and len(killed) == 1  # at most once, though the loop failed over
    (other,) = [s for s in servers if s is not killed[0]]
    assert other.requests_to("/api/chat")[-1].body["messages"][-1]["content"] == "done"
    assert "[kill said: done]" in shell.user_ns["ans"]


def test_the_line_form_names_itself_when_interrupted_in_a_tool(shell: InteractiveShell) -> None:
    run(
        shell,
        "import _thread, time\ndef slow(x: int) -> int:\n"
        "    _thread.interrupt_main()\n    time.sleep(5)\n",
    )
    cell = run(shell, "y = %llm --tools slow call slow")
    assert isinstance(cell.error, KeyboardInterrupt), cell.text
    assert str(cell.error) == "%llm stopped while the tool 'slow' ran"


@pytest.mark.docker
def test_a_huge_program_from_the_model_is_shown_cut_and_run_whole(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    docker.from_env().ping()
    code = "comment = 1  # " + "y" * 200_000 + "\nprint('ran', comment)\n"
    cell = run(shell, f"%%llm --tools sandbox\nRun:\n```python\n{code}```")
    assert cell.error is None, cell.text
    (shown_code,) = [
        o.data for o in cell.outputs if "python ⟶ sandbox" in o.data.get("text/plain", "")
    ]
    for text in shown_code.values():
        assert len(text) < 20_000, len(text)
    assert f"[truncated: {len(code):,} characters in all]" in shown_code["text/plain"]
    assert "ran 1" in cell.stdout  # the sandbox got all of it, the last line included
