"""%%llm option values are checked when the line is parsed, before any request is sent."""

from __future__ import annotations

import logging

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.kernel.config import Gleitzeit, SettingError
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def config_of(shell: InteractiveShell) -> Gleitzeit:
    return next(c for c in shell.configurables if isinstance(c, Gleitzeit))


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ("-t 2.5", "argument -t/--temperature: 2.5 is out of range (use 0 to 2)"),
        ("-t -0.1", "argument -t/--temperature: -0.1 is out of range (use 0 to 2)"),
        ("-t nan", "argument -t/--temperature: nan is out of range (use 0 to 2)"),
        ("-t hot", "argument -t/--temperature: 'hot' is not a number (use 0 to 2)"),
        ("--max-tokens 0", "argument --max-tokens: 0 is too small (use 1 or more)"),
        ("--max-tokens 1.5", "argument --max-tokens: '1.5' is not a whole number"),
        ("--strategy fastest", "argument --strategy: unknown strategy 'fastest'; one of: fleet,"),
        ("--map items --concurrency 0", "argument --concurrency: 0 is too small"),
        ("--map items --concurrency -3", "argument --concurrency: -3 is too small"),
    ],
)
def test_bad_option_value_is_a_one_line_usage_error_and_sends_nothing(
    shell: InteractiveShell, standin: OllamaStandIn, options: str, complaint: str
) -> None:
    shell.user_ns["items"] = ["a", "b"]
    before = len(standin.requests_to("/api/generate"))
    cell = run(shell, f"%%llm {options}\nSay {{item}}")
    assert type(cell.error) is UsageError
    assert str(cell.error).startswith(complaint)
    assert len(cell.text.strip().splitlines()) == 1, cell.text
    assert len(standin.requests_to("/api/generate")) == before


def test_line_form_checks_option_values_too(shell: InteractiveShell) -> None:
    cell = run(shell, "%llm -t 9 hello")
    assert type(cell.error) is UsageError
    assert "temperature: 9 is out of range" in str(cell.error)


@pytest.mark.parametrize("options", ["-t 0", "-t 2", "--max-tokens 1", "--strategy round_robin"])
def test_boundary_values_are_accepted(
    shell: InteractiveShell, standin: OllamaStandIn, options: str
) -> None:
    cell = run(shell, f"%%llm --no-stream {options}\nhi")
    assert cell.error is None, cell.text


def test_config_rejects_unknown_strategy_and_keeps_the_old_one(
    shell: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config_of(shell)
    run(shell, "%config Gleitzeit.strategy = 'least_loaded'")
    assert cfg.strategy == "least_loaded"
    with caplog.at_level(logging.ERROR):
        run(shell, "%config Gleitzeit.strategy = 'fastest'")
    assert cfg.strategy == "least_loaded"
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert messages == [
        "Gleitzeit.strategy: unknown strategy 'fastest'; one of: fleet, round_robin, random,"
        " least_loaded, least_latency, weighted, affinity"
    ]
    run(shell, "%config Gleitzeit.strategy = 'fleet'")


def test_setting_a_bad_strategy_in_code_is_one_line(shell: InteractiveShell) -> None:
    cfg = config_of(shell)
    shell.user_ns["_cfg"] = cfg
    cell = run(shell, "_cfg.strategy = 'nope'")
    assert isinstance(cell.error, SettingError)
    assert cell.text.strip() == (
        "UsageError: Gleitzeit.strategy: unknown strategy 'nope'; one of: fleet, round_robin,"
        " random, least_loaded, least_latency, weighted, affinity"
    )
    assert cfg.strategy == "fleet"
