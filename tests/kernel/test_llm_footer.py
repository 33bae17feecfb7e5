"""The %%llm footer: tokens in and out, time to first token, generation speed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

FOOTER = re.compile(
    r"^llama3\.2 · \S+ · (?P<total>[\d,]+) ms · (?P<sent>\d+) → (?P<got>\d+) tokens"
    r" · first token (?P<first>[\d,]+) ms · (?P<tps>[\d.]+) tok/s$"
)


@pytest.fixture
def slow_start(shell: InteractiveShell) -> Iterator[OllamaStandIn]:
    # 0.3 s before the first token, then 50 tokens/s: both show clearly in the footer.
    with OllamaStandIn(
        models=["llama3.2:latest"], latency=0.3, tokens_per_s=50, default_tokens=10
    ) as srv:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{srv.url}']")
        yield srv


def footer_of(shell: InteractiveShell, source: str) -> re.Match[str]:
    cell = run(shell, source)
    assert cell.error is None, cell.text
    footer = cell.data("text/plain")[-1]
    match = FOOTER.match(footer)
    assert match is not None, footer
    return match


def ms(match: re.Match[str], name: str) -> float:
    return float(match.group(name).replace(",", ""))


@pytest.mark.parametrize("stream", ["", "--no-stream "])
def test_footer_shows_tokens_first_token_time_and_speed(
    shell: InteractiveShell, slow_start: OllamaStandIn, stream: str
) -> None:
    m = footer_of(shell, f"%%llm {stream}--max-tokens 8\nfour words of prompt")
    body = slow_start.requests_to("/api/generate")[-1].body
    assert body["prompt"] == "four words of prompt"
    assert m.group("sent") == "4" and m.group("got") == "8"
    # The first token waits for prompt evaluation; the rest of the call is generation.
    assert 300 <= ms(m, "first") < ms(m, "total")
    assert ms(m, "total") - ms(m, "first") >= 8 / 50 * 1000 * 0.8
    # Generation speed leaves the prompt's 0.3 s out: above the whole call's rate, and never
    # above the pace the stand-in keeps (a loaded machine only slows it down).
    tps = float(m.group("tps"))
    assert 8 * 1000 / ms(m, "total") < tps <= 60


def test_footer_leaves_out_what_the_server_did_not_report() -> None:
    from gleitzeit_jupyter.kernel.render import footer_text

    text = footer_text(model="m", instance="i", latency_ms=1200.0, tokens_per_s=None)
    assert text == "m · i · 1,200 ms"
    text = footer_text(
        model="m", instance="i", latency_ms=5.0, tokens_per_s=None, completion_tokens=3
    )
    assert text == "m · i · 5 ms · ? → 3 tokens"
