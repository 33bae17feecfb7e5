"""Fixtures: an IPython shell with the extension loaded, pointed at Ollama stand-ins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

MODELS = ["llama3.2:latest", "qwen2.5:0.5b"]


@pytest.fixture(scope="session")
def standin() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=MODELS, tokens_per_s=200, default_tokens=12) as srv:
        yield srv


@pytest.fixture(scope="session")
def standin2() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=MODELS, tokens_per_s=200, default_tokens=12, seed=1) as srv:
        yield srv


@pytest.fixture
def shell(standin: OllamaStandIn) -> Iterator[InteractiveShell]:
    sh = InteractiveShell.instance()
    res = sh.run_cell("%load_ext gleitzeit_jupyter")
    assert res.success, res.error_in_exec
    sh.run_cell(f"%config Gleitzeit.ollama_hosts = ['{standin.url}']")
    sh.run_cell("%config Gleitzeit.default_model = 'llama3.2'")
    standin.faults.update(error_rate=0.0, busy_rate=0.0, hang=False, stream_error_after=None)
    yield sh
    res = sh.run_cell("%unload_ext gleitzeit_jupyter")
    assert res.success, res.error_in_exec
