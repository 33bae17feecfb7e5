"""What %%llm sends: code in the prompt stays as written, --raw, {Err}, undefined names."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def sent_prompt(srv: OllamaStandIn) -> str:
    return str(srv.requests_to("/api/generate")[-1].body["prompt"])


def ask(shell: InteractiveShell, srv: OllamaStandIn, source: str) -> str:
    cell = run(shell, source)
    assert cell.error is None, cell.text
    return sent_prompt(srv)


def test_fenced_code_is_sent_as_written_and_prose_still_interpolates(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    shell.user_ns["name"] = "Alice"
    prompt = ask(
        shell,
        standin,
        '%%llm --no-stream\nReview this for {name}:\n```python\nprint(f"Hello {name}")\n```\n',
    )
    assert prompt == 'Review this for Alice:\n```python\nprint(f"Hello {name}")\n```'


@pytest.mark.parametrize(
    "fenced",
    [
        "~~~\nf'{secret}'\n~~~",
        "````md\n```\n{secret}\n```\n````",
        "``` py title='x'\n{secret}\n```",
        "- item\n\n  ```\n  {secret}\n  ```",
        "> ```\n> {secret}\n> ```",
        "```\n{secret} and the fence is never closed",
    ],
)
def test_no_fence_kind_leaks_a_variable(
    shell: InteractiveShell, standin: OllamaStandIn, fenced: str
) -> None:
    shell.user_ns["secret"] = "hunter2"
    prompt = ask(shell, standin, f"%%llm --no-stream\n{fenced}")
    assert prompt == fenced
    assert "hunter2" not in prompt


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Use `f'{x}'` for {name}", "Use `f'{x}'` for Bob"),
        ("Use ``a `{x}` b`` for {name}", "Use ``a `{x}` b`` for Bob"),
        # A backtick run without a partner of the same length is plain text.
        ("a ``` b {name}", "a ``` b Bob"),
        ("`` x ` {name}", "`` x ` Bob"),
        # A backslash-escaped backtick opens nothing.
        ("\\`{name}`", "\\`Bob`"),
    ],
)
def test_inline_code_spans_follow_commonmark(
    shell: InteractiveShell, standin: OllamaStandIn, source: str, expected: str
) -> None:
    shell.user_ns["name"] = "Bob"
    shell.user_ns.pop("x", None)
    assert ask(shell, standin, f"%%llm --no-stream\n{source}") == expected


def test_undefined_name_inside_code_does_not_fail_the_cell(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    shell.user_ns.pop("nowhere", None)
    prompt = ask(shell, standin, "%%llm --no-stream\nWhy `{nowhere}`?\n```\n{nowhere}\n```")
    assert "{nowhere}" in prompt


def test_raw_sends_the_cell_exactly_as_written(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    shell.user_ns["name"] = "Alice"
    body = "Hi {name}, {{x}}, {undefined_thing} {Err}"
    assert ask(shell, standin, f"%%llm --no-stream --raw\n{body}") == body
    cell = run(shell, f"%llm --raw --no-stream {body}")
    assert cell.error is None, cell.text
    assert sent_prompt(standin) == body


def test_undefined_name_is_one_line_naming_it(shell: InteractiveShell) -> None:
    shell.user_ns.pop("missing_var", None)
    cell = run(shell, "%%llm\nTell me about {missing_var}")
    assert isinstance(cell.error, UserError)
    lines = [line for line in cell.text.splitlines() if line.strip()]
    assert len(lines) == 1, cell.text
    assert "missing_var" in lines[0]


def test_err_is_the_last_failed_cells_traceback_as_plain_text(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    failed = run(shell, "def explode():\n    return {}['no_such_key']\nexplode()")
    assert failed.error is not None
    run(shell, "ok = 1")  # a later cell that succeeds does not replace it
    prompt = ask(shell, standin, "%%llm --no-stream\nExplain this error:\n{Err}")
    assert prompt.startswith("Explain this error:\n")
    assert "KeyError" in prompt and "'no_such_key'" in prompt and "explode()" in prompt
    assert "\x1b" not in prompt


def test_err_n_picks_that_cell(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    first = run(shell, "1 / 0")
    number = first.result.execution_count
    run(shell, "raise ValueError('later failure')")
    prompt = ask(shell, standin, f"%%llm --no-stream\n{{Err[{number}]}}")
    assert "ZeroDivisionError" in prompt and "later failure" not in prompt
    assert "ValueError" in ask(shell, standin, "%%llm --no-stream\n{Err}")


def test_err_without_a_failure_is_a_clear_user_error(shell: InteractiveShell) -> None:
    ok = run(shell, "fine = 2")
    cell = run(shell, f"%%llm\n{{Err[{ok.result.execution_count}]}}")
    assert isinstance(cell.error, UserError)
    assert f"cell {ok.result.execution_count} did not fail" in cell.text
    assert len([line for line in cell.text.splitlines() if line.strip()]) == 1


def test_help_explains_raw_and_code_fences(shell: InteractiveShell) -> None:
    doc = shell.find_cell_magic("llm").__doc__ or ""
    assert "--raw" in doc and "fenced code" in doc and "{Err}" in doc
