"""A failing %%llm / %llm shows one line, and raises the documented error type."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import closed_port, run

from gleitzeit_jupyter.hub.errors import HubError, NoResourceAvailable, UserError
from gleitzeit_jupyter.kernel.interpolate import InterpolationError
from gleitzeit_jupyter.kernel.render import CellError


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_unknown_model_is_a_user_error_shown_in_one_line(shell: InteractiveShell) -> None:
    cell = run(shell, "%%llm -m no-such-model\nHello")
    assert isinstance(cell.error, UserError) and isinstance(cell.error, CellError)
    assert type(cell.error).__name__ == "UserError"
    line = one_line(cell.text)
    assert line.startswith("UserError: %%llm: ") and "no-such-model" in line


def test_user_error_from_the_line_magic_can_be_caught_in_code(shell: InteractiveShell) -> None:
    cell = run(
        shell,
        "from gleitzeit_jupyter import UserError\n"
        "try:\n"
        "    answer = %llm -m no-such-model Hello\n"
        "except UserError as exc:\n"
        "    caught = exc\n",
    )
    assert cell.error is None, cell.text
    caught = shell.user_ns["caught"]
    assert isinstance(caught, UserError)
    assert "no-such-model" in str(caught)
    assert "\n" not in str(caught)


def test_undefined_name_is_an_interpolation_error(shell: InteractiveShell) -> None:
    cell = run(shell, "%%llm\nHello {nobody_here}")
    assert isinstance(cell.error, InterpolationError)
    assert isinstance(cell.error, UserError)
    assert one_line(cell.text).startswith("InterpolationError: %%llm: unknown name 'nobody_here'")


def test_every_host_down_names_each_host_and_the_setting(shell: InteractiveShell) -> None:
    urls = [f"http://127.0.0.1:{closed_port()}" for _ in range(2)]
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = {urls!r}")
    cell = run(shell, "%%llm\nHello")
    assert isinstance(cell.error, NoResourceAvailable)
    line = one_line(cell.text)
    assert line.startswith("NoResourceAvailable: %%llm: ")
    assert all(url in line for url in urls)
    assert "%config Gleitzeit.ollama_hosts" in line


def test_models_with_every_host_down_is_an_error_not_an_empty_table(
    shell: InteractiveShell,
) -> None:
    urls = [f"http://127.0.0.1:{closed_port()}" for _ in range(2)]
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = {urls!r}")
    cell = run(shell, "%llm models")
    assert isinstance(cell.error, NoResourceAvailable)
    line = one_line(cell.text)
    assert all(url in line for url in urls)
    assert "%config Gleitzeit.ollama_hosts" in line


@pytest.mark.parametrize("kind", [UserError, NoResourceAvailable, HubError])
def test_one_line_error_keeps_the_original_type_and_fields(kind: type[HubError]) -> None:
    from gleitzeit_jupyter.kernel.render import cell_error

    original = kind("it broke", instance="gpu-1:11434", hint="fix it")
    err = cell_error(original, context="%%llm")
    assert isinstance(err, kind) and isinstance(err, CellError)
    assert err.cause is original and err.instance == "gpu-1:11434"
    assert str(err) == "%%llm: it broke (instance gpu-1:11434). fix it"
    assert err._render_traceback_() == [f"\x1b[0;31m{kind.__name__}\x1b[0m: {err}"]


def test_a_megabyte_of_error_text_is_shown_clipped_with_its_length() -> None:
    from gleitzeit_jupyter.hub.errors import ResourceFailed
    from gleitzeit_jupyter.kernel.render import MESSAGE_MAX, cell_error

    err = cell_error(ResourceFailed("x" * 1_000_000, instance="i"), context="%%llm")
    assert len(str(err)) < MESSAGE_MAX + 200
    assert "more characters)" in str(err)
    assert isinstance(err, ResourceFailed)
