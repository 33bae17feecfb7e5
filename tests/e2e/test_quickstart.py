"""The quickstart notebook end to end: executed headless the way ./scripts/demo does it, its
status panel checked in the saved widget state, and the exported HTML rendered in Chromium."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.browser
def test_quickstart_runs_and_renders(tmp_path: Path, monkeypatch) -> None:
    # A fresh machine: nothing answers where the notebook looks for Ollama.
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    monkeypatch.delenv("GLEITZEIT_OLLAMA_HOSTS", raising=False)
    demo = _script("_demo_notebook")
    executed, html = demo.run(ROOT / "notebooks" / "quickstart.ipynb", tmp_path, timeout=300)
    nb = nbformat.read(executed, as_version=4)

    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in code:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, (cell.source, errors)
        assert all(o.get("name") != "stderr" or "Traceback" not in o.text for o in cell.outputs)
    first = code[0].outputs[0]
    assert first.output_type == "stream"
    assert first.text.startswith("No Ollama answered at http://127.0.0.1:9: started two Ollama")
    assert "stand-in" in first.text
    # every code cell produced something (plots are PNGs from the sandbox)
    assert all(cell.outputs for cell in code[:-1])
    pngs = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 2
    # The code interpreter: the model's code ran in the sandbox and its output reached the model.
    interp = next(c for c in code if c.source.startswith("%%llm --tools sandbox"))
    printed = "".join(o.text for o in interp.outputs if o.output_type == "stream")
    assert "338350 10000" in printed
    answers = [
        o.data["text/markdown"] for o in interp.outputs if "text/markdown" in o.get("data", {})
    ]
    assert any("[python said: stdout:\n338350 10000" in a for a in answers), answers
    assert (tmp_path / "quickstart-pools.sqlite").exists()
    # A schema over --map: validated rows, a summary with token totals, a joined table.
    schema_map = next(c for c in code if c.source.startswith("%%llm --map first --schema"))
    summary = "".join(o.get("text", "") for o in schema_map.outputs if o.get("name") == "stdout")
    assert summary.startswith("--map: 6 rows, 6 ok, 0 failed in "), summary
    assert " tokens, " in summary and " tok/s" in summary
    joined = code[code.index(schema_map) + 1].outputs[0]["data"]["text/html"]
    assert "<th>sentiment</th>" in joined and "<th>issue</th>" in joined

    # The panel as saved: rebuild the models the way a front end would from the state.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {k: v["state"] for k, v in state.items()}

    def find(*classes: str) -> list[dict]:
        return [m for m in models.values() if all(c in m.get("_dom_classes", []) for c in classes)]

    assert len(find("gz-board")) == 1
    assert len(find("gz-panel", "gz-provider-ollama")) == 1
    assert len(find("gz-panel", "gz-provider-sandbox")) == 1
    rows = find("gz-cell-instance", "gz-inst")
    # the name cell shows a short label (the full name on hover); the row class names the id
    instances = sorted(
        next(c for c in m["_dom_classes"] if c.startswith("gz-row-")).removeprefix("gz-row-")
        for m in rows
    )
    assert len(instances) == 3 and "sandbox-1" in instances  # 2 Ollama stand-ins + 1 container
    ollama_rows = [i for i in instances if i.startswith("127_0_0_1_")]
    assert all("\u2026:" in m["value"] for m in rows if "sandbox" not in m["value"])
    for ident in ollama_rows:
        dot = find("gz-cell-dot", "gz-row-" + ident)
        assert len(dot) == 1
        style = models[dot[0]["style"].removeprefix("IPY_MODEL_")]
        assert style["text_color"] == "#2e9e44"  # healthy green
    requests = {
        next(c for c in m["_dom_classes"] if c.startswith("gz-row-")): int(
            m["value"].replace(",", "")
        )
        for m in find("gz-cell-requests")
    }
    per_ollama = [v for k, v in requests.items() if k.startswith("gz-row-127_0_0_1_")]
    # %llm models + 1 %%llm + 30 --map rows went to the Ollama pool. The fleet strategy may
    # keep them all on the server that has the model in memory while it has free slots, so
    # only the total is fixed; both servers still have their row.
    assert len(per_ollama) == 2
    assert sum(per_ollama) >= 31
    head = find("gz-head-extra")
    assert {m["value"] for m in head} == {"tokens/s", "runs / recyc."}

    # The HTML page carries the widget state and renders the panel in a real browser.
    page = html.read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" in page
    assert json.dumps("gz-board") in page or "gz-board" in page
    shot = _script("_screenshot_panel").render(html, tmp_path / "panel.png")
    from struct import unpack

    with open(shot, "rb") as fh:
        header = fh.read(24)
    width, height = unpack(">II", header[16:24])
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    assert width > 600 and height > 250  # two panels, not an empty box
