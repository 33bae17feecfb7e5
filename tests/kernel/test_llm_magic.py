"""%%llm / %llm driven through a real InteractiveShell against the Ollama stand-in."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import closed_port, run

from gleitzeit_jupyter.hub.errors import HubError
from gleitzeit_jupyter.kernel.render import CellError, CellInterrupted
from gleitzeit_jupyter.kernel.runtime import current_runtime
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def last_prompt(srv: OllamaStandIn, path: str = "/api/generate") -> dict:
    return srv.requests_to(path)[-1].body


def test_cell_streams_renders_markdown_and_stores_output(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    shell.user_ns["who"] = "Ada"
    cell = run(shell, '%%llm -o answer -t 0.3 --max-tokens 40\nGreet {who}. JSON: {"k": 1}')
    assert cell.error is None, cell.text
    body = last_prompt(standin)
    assert body["prompt"] == 'Greet Ada. JSON: {"k": 1}'
    assert body["options"] == {"temperature": 0.3, "num_predict": 40}
    assert body["stream"] is True
    answer = shell.user_ns["answer"]
    assert isinstance(answer, str) and len(answer.split()) == 40
    # One display handle: created empty, updated in place as tokens arrive, final Markdown.
    updates = [o for o in cell.outputs if o.update]
    assert len(updates) >= 3, "tokens should arrive in more than one update"
    final_md = [o.data["text/markdown"] for o in updates][-1]
    assert final_md == answer
    partials = [o.data["text/plain"] for o in updates]
    assert any(0 < len(p) < len(answer) for p in partials)
    # Throttled: far fewer updates than tokens.
    assert len(updates) < 40
    footer = cell.data("text/plain")[-1]
    assert footer.startswith("llama3.2 · ")
    assert standin.url.split("//")[1] in footer or "ollama" in footer
    assert footer.endswith("tok/s") and " ms · " in footer


def test_no_stream_text_and_system(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    cell = run(shell, "%%llm --no-stream -f text -s 'Be terse.' -m qwen2.5:0.5b -o t\nHello")
    assert cell.error is None, cell.text
    assert not [o for o in cell.outputs if o.update]
    body = last_prompt(standin)
    assert body["stream"] is False and body["system"] == "Be terse."
    assert body["model"] == "qwen2.5:0.5b"
    assert cell.outputs[0].data == {"text/plain": shell.user_ns["t"]}
    assert cell.data("text/plain")[-1].startswith("qwen2.5:0.5b · ")


def test_format_json_parses(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    cell = run(shell, "%%llm -f json -o obj\nGive me an object")
    assert cell.error is None, cell.text
    assert last_prompt(standin)["format"] == "json"
    obj = shell.user_ns["obj"]
    assert isinstance(obj, dict) and isinstance(obj["response"], str)
    assert cell.data("application/json")[-1] == obj


def test_format_code_offers_next_cell_once_per_cell(shell: InteractiveShell) -> None:
    shell.rl_next_input = None
    src = "%%llm -f code -o code\nWrite a function"
    cell = run(shell, src)
    assert cell.error is None, cell.text
    code = shell.user_ns["code"]
    assert shell.rl_next_input == code
    assert cell.data("text/markdown")[-1] == f"```python\n{code}\n```"
    # Rerunning the same cell does not offer (i.e. create) another cell.
    shell.rl_next_input = None
    assert run(shell, src).error is None
    assert shell.rl_next_input is None
    # A different prompt is a new offer.
    assert run(shell, "%%llm -f code\nWrite another function").error is None
    assert shell.rl_next_input is not None


def test_chat_keeps_history_and_instance(
    shell: InteractiveShell, standin: OllamaStandIn, standin2: OllamaStandIn
) -> None:
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{standin.url}', '{standin2.url}']")
    before = len(standin.requests_to("/api/chat")) + len(standin2.requests_to("/api/chat"))
    footers = []
    for turn in range(4):
        cell = run(shell, f"%%llm --chat trip -s 'You plan trips.' -o r{turn}\nTurn {turn}")
        assert cell.error is None, cell.text
        footers.append(cell.data("text/plain")[-1].split(" · ")[1])
    assert len(set(footers)) == 1, f"affinity should keep one instance: {footers}"
    served = standin if standin.requests_to("/api/chat") else standin2
    reqs = (standin.requests_to("/api/chat") + standin2.requests_to("/api/chat"))[before:]
    assert len(reqs) == 4 and all(r in served.requests_to("/api/chat") for r in reqs)
    msgs = reqs[-1].body["messages"]
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert msgs[0]["content"] == "You plan trips."
    assert msgs[2]["content"] == shell.user_ns["r0"]
    assert msgs[-1]["content"] == "Turn 3"
    # Another conversation starts from scratch.
    assert run(shell, "%%llm --chat other\nHi").error is None
    latest = max(
        standin.requests_to("/api/chat") + standin2.requests_to("/api/chat"), key=lambda r: r.at
    )
    assert latest.body["messages"] == [{"role": "user", "content": "Hi"}]


def test_line_magic_returns_text_and_models(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    shell.user_ns["topic"] = "tea"
    cell = run(shell, 'x = %llm -m qwen2.5:0.5b what\'s good about {topic}? "really"')
    assert cell.error is None, cell.text
    assert isinstance(shell.user_ns["x"], str) and shell.user_ns["x"]
    assert last_prompt(standin)["prompt"] == 'what\'s good about tea? "really"'
    cell = run(shell, "m = %llm models")
    assert cell.error is None, cell.text
    frame = shell.user_ns["m"]
    assert isinstance(frame, pd.DataFrame)
    assert set(frame.index) == {"llama3.2:latest", "qwen2.5:0.5b"}
    assert all(len(v) == 1 for v in frame["instances"])


def test_errors_are_one_line(shell: InteractiveShell) -> None:
    cell = run(shell, "%%llm -m no-such-model\nHello")
    assert isinstance(cell.error, CellError) and isinstance(cell.error, HubError)
    lines = [ln for ln in cell.text.splitlines() if ln.strip()]
    assert len(lines) == 1, cell.text
    assert "no-such-model" in lines[0] and "llama3.2:latest" in lines[0]
    assert "Traceback" not in cell.text

    cell = run(shell, "%%llm\nHello {nobody}")
    assert [ln for ln in cell.text.splitlines() if ln.strip()] == [
        "InterpolationError: %%llm: unknown name 'nobody' in {nobody}. define it first, or"
        " write {{nobody}} for literal braces"
    ]
    cell = run(shell, "%%llm --temperature hot\nHello")
    assert "UsageError" in cell.text and "hot" in cell.text and "Traceback" not in cell.text
    cell = run(shell, "%llm --bogus hello")
    assert "UsageError" in cell.text and "--bogus" in cell.text


def test_no_ollama_reachable_says_where_it_looked(shell: InteractiveShell) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{url}']")
    start = time.monotonic()
    cell = run(shell, "%%llm\nHello")
    assert time.monotonic() - start < 15
    assert isinstance(cell.error, CellError)
    lines = [ln for ln in cell.text.splitlines() if ln.strip()]
    assert len(lines) == 1, cell.text
    assert url in lines[0] and "Gleitzeit.ollama_hosts" in lines[0]


def test_interrupting_a_stream_cancels_it(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    import _thread

    open_before = standin.open_connections
    standin.tokens_per_s = 5  # 60 tokens: ~12 s unless interrupted
    try:
        threading.Timer(0.8, _thread.interrupt_main).start()
        start = time.monotonic()
        cell = run(shell, "%%llm --max-tokens 60 -o partial\nTake your time")
        took = time.monotonic() - start
    finally:
        standin.tokens_per_s = 200
    assert isinstance(cell.error, CellInterrupted)
    assert took < 5.0
    assert [ln for ln in cell.text.splitlines() if ln.strip()] == [
        "Interrupted: %%llm stopped; the request to the model was cancelled"
    ]
    # The HTTP stream was closed (the server saw the hang-up), and the kernel goes on.
    deadline = time.monotonic() + 3
    while standin.open_connections > open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert standin.disconnects, "the stand-in should have seen the client hang up"
    assert run(shell, "%%llm\nStill there?").error is None


def test_unload_leaves_nothing_and_reload_works(shell: InteractiveShell) -> None:
    assert run(shell, "%%llm\nHi").error is None
    rt = current_runtime()
    assert rt is not None and rt.thread.is_alive()
    shell.run_cell("%unload_ext gleitzeit_jupyter")
    assert not rt.thread.is_alive()
    assert "llm" not in shell.magics_manager.magics["cell"]
    assert not [t for t in threading.enumerate() if t.name == "gleitzeit-runtime"]
    assert shell.run_cell("%load_ext gleitzeit_jupyter").success
    assert run(shell, "%%llm\nHi again").error is None
    assert json.dumps(current_runtime().providers["ollama"].status())


def test_instance_strategy_and_timeout(
    shell: InteractiveShell, standin: OllamaStandIn, standin2: OllamaStandIn
) -> None:
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{standin.url}', '{standin2.url}']")
    assert run(shell, "%%llm\nwarm up").error is None
    provider = current_runtime().providers["ollama"]
    target = next(i for i in provider.instances if i.endpoint.rstrip("/") == standin2.url)
    before = len(standin2.requests_to("/api/generate"))
    for _ in range(3):
        cell = run(shell, f"%%llm --instance {target.id}\nPinned")
        assert cell.error is None, cell.text
        assert cell.data("text/plain")[-1].split(" · ")[1] == target.id
    assert len(standin2.requests_to("/api/generate")) == before + 3

    used = set()
    for _ in range(4):
        cell = run(shell, "%%llm --strategy round_robin\nSpread")
        assert cell.error is None, cell.text
        used.add(cell.data("text/plain")[-1].split(" · ")[1])
    assert len(used) == 2, used
    assert provider.strategy != "round_robin"  # per call only

    cell = run(shell, "%%llm --instance nope\nHi")
    assert isinstance(cell.error, CellError) and "nope" in cell.text

    shell.run_cell("%config Gleitzeit.request_timeout = 0.5")
    standin.faults.update(hang=True)
    standin2.faults.update(hang=True)
    try:
        start = time.monotonic()
        cell = run(shell, "%%llm\nNever answered")
        took = time.monotonic() - start
    finally:
        standin.faults.update(hang=False)
        standin2.faults.update(hang=False)
        shell.run_cell("%config Gleitzeit.request_timeout = 0.0")
    assert took < 5, took
    assert isinstance(cell.error, CellError)
    (line,) = [ln for ln in cell.text.splitlines() if ln.strip()]
    assert line.startswith("ExecutionTimeout: %%llm:"), line


def test_help_comes_from_magic_arguments(shell: InteractiveShell) -> None:
    for magic, options in [
        ("%%llm?", ["--map EXPR", "--chat SESSION", "-f", "--no-stream", "--concurrency N"]),
        ("%%sandbox?", ["--in a,b", "--out c,d", "--timeout S", "--mem SIZE", "--session NAME"]),
        ("%gleitzeit?", ["--export PATH", "status | metrics"]),
    ]:
        cell = run(shell, magic)
        assert cell.error is None, cell.text
        for opt in options:
            assert opt in cell.text, (magic, opt)


def test_line_form_errors_name_the_line_magic(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    cell = run(shell, "x = %llm -m no-such-model hi")
    assert isinstance(cell.error, CellError)
    assert cell.text.startswith("UserError: %llm: model 'no-such-model'"), cell.text
    cell = run(shell, "x = %llm hi {undefined_thing}")
    assert cell.text.startswith("InterpolationError: %llm: unknown name 'undefined_thing'")
    before = len(standin.requests_to("/api/generate"))
    cell = run(shell, "%%llm -o 2bad\nHello")
    assert "UsageError" in cell.text and "'2bad'" in cell.text
    assert len(standin.requests_to("/api/generate")) == before  # refused before the call


def test_terminal_streams_text_once(
    shell: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    # No capture_output: the shell's own terminal publisher, as in terminal IPython.
    res = shell.run_cell("%%llm -o said\nHello terminal")
    assert res.success, res.error_in_exec
    out = capsys.readouterr().out
    said = shell.user_ns["said"]
    assert out.count(said) == 1, out
    assert out.startswith(said + "\n")
    assert "llama3.2 · " in out
