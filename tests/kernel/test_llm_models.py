"""%llm models: a readable table, one plain value per cell."""

from __future__ import annotations

import httpx
import pandas as pd
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.kernel.models_table import models_table
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def test_models_table_is_flat_with_sizes_in_gb(
    shell: InteractiveShell, standin: OllamaStandIn, standin2: OllamaStandIn
) -> None:
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{standin.url}', '{standin2.url}']")
    cell = run(shell, "frame = %llm models")
    assert cell.error is None, cell.text
    frame: pd.DataFrame = shell.user_ns["frame"]
    assert list(frame.columns) == [
        "pool",
        "parameters",
        "quantization",
        "family",
        "capabilities",
        "size_gb",
        "instances",
        "loaded_on",
    ]
    assert not any(isinstance(v, dict) for col in frame.columns for v in frame[col])
    tags = {m["name"]: m for m in httpx.get(f"{standin.url}/api/tags").json()["models"]}
    row = frame.loc["qwen2.5:0.5b"]
    assert row["size_gb"] == round(tags["qwen2.5:0.5b"]["size"] / 1e9, 2)
    assert row["parameters"] == tags["qwen2.5:0.5b"]["details"]["parameter_size"]
    assert row["quantization"] == tags["qwen2.5:0.5b"]["details"]["quantization_level"]
    assert row["family"] == "qwen"
    assert len(row["instances"]) == 2
    assert row["pool"] == "ollama"


def test_capabilities_are_one_readable_column_when_reported() -> None:
    frame = models_table(
        [
            {"name": "b", "size": 5_000_000_000, "capabilities": ["vision", "completion"]},
            {"name": "a", "size": 1_234_000_000, "details": {"parameter_size": "1B"}},
        ]
    )
    assert list(frame.index) == ["a", "b"]
    assert frame.loc["b", "capabilities"] == "completion, vision"
    assert frame.loc["a", "size_gb"] == 1.23 and frame.loc["a", "parameters"] == "1B"


def test_llm_models_shows_the_capabilities_learned_from_each_server() -> None:
    import os

    from IPython.core.interactiveshell import InteractiveShell

    from gleitzeit_jupyter.testing.ollama import OllamaStandIn

    s = OllamaStandIn(models=["llama3.2:latest", "llava:latest"])
    s.start()
    old = os.environ.get("GLEITZEIT_OLLAMA_HOSTS")
    os.environ["GLEITZEIT_OLLAMA_HOSTS"] = s.url
    try:
        shell = InteractiveShell.instance()
        shell.run_cell("%load_ext gleitzeit_jupyter")
        shell.run_cell("%gleitzeit reset")
        shell.run_cell("_models = %llm models", store_history=False)
        frame = shell.user_ns["_models"]
        assert "capabilities" in frame.columns, frame.columns
        assert "completion" in frame.loc["llama3.2:latest", "capabilities"]
    finally:
        shell.run_cell("%gleitzeit reset")
        if old is None:
            os.environ.pop("GLEITZEIT_OLLAMA_HOSTS", None)
        else:
            os.environ["GLEITZEIT_OLLAMA_HOSTS"] = old
        s.stop()
