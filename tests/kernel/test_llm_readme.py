"""The %%llm examples of docs/magics.md for --schema, --image and --think run as written, cell
by cell, against a stand-in whose model can see and think."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

MAGICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "magics.md"
CELL = re.compile(r"<!-- test: llm cell -->\n```python\n(.*?)```", re.S)


@pytest.fixture
def capable(shell: InteractiveShell) -> Iterator[OllamaStandIn]:
    caps = {"llama3.2:latest": ["completion", "vision", "thinking"]}
    with OllamaStandIn(models=list(caps), capabilities=caps, tokens_per_s=500) as srv:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{srv.url}']")
        yield srv


def test_readme_llm_cells_run_in_order(shell: InteractiveShell, capable: OllamaStandIn) -> None:
    cells = CELL.findall(MAGICS_DOC.read_text())
    assert len(cells) >= 10, "docs/magics.md lost its --schema / --image / --think examples"
    for source in cells:
        cell = run(shell, source)
        assert cell.error is None, (source, cell.text)
    ns = shell.user_ns
    assert type(ns["review"]).__name__ == "Review"
    assert list(ns["table"].columns) == ["sentiment", "stars", "summary"]
    assert list(ns["table"].index) == ["kettle", "lamp", "chair"]
    assert ns["why"].thinking
    sent = [r.body for r in capable.requests_to("/api/generate")]
    assert any(b.get("images") for b in sent) and any(b.get("think") for b in sent)


def test_help_shows_the_new_options(shell: InteractiveShell) -> None:
    doc = shell.find_cell_magic("llm").__doc__
    for text in ("--schema NAME", "--image X", "--think [LEVEL]", "{column}", "low|medium|high"):
        assert text in doc, text
