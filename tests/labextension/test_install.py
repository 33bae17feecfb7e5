"""The built extension is installed where JupyterLab finds it, and its unit tests pass."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXT = REPO / "labextension"
BIN = Path(sys.executable).parent


def _jlpm() -> list[str]:
    jlpm = BIN / "jlpm"
    return [str(jlpm)] if jlpm.exists() else [sys.executable, "-m", "jupyter_builder.jlpm"]


def test_labextension_list_shows_it_enabled_and_ok() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    line = next((ln for ln in text.splitlines() if "gleitzeit-jupyter" in ln), None)
    assert line is not None, text
    assert re.search(r"gleitzeit-jupyter v\S+ enabled OK", line), line


def test_installed_extension_matches_the_sources() -> None:
    import jupyter_core.paths

    found = [
        Path(p) / "gleitzeit-jupyter" / "package.json"
        for p in jupyter_core.paths.jupyter_path("labextensions")
        if (Path(p) / "gleitzeit-jupyter" / "package.json").exists()
    ]
    assert found, "gleitzeit-jupyter is not in any labextensions directory"
    meta = json.loads(found[0].read_text())
    source = json.loads((EXT / "package.json").read_text())
    assert meta["name"] == source["name"] == "gleitzeit-jupyter"
    assert meta["version"] == source["version"]
    load = meta["jupyterlab"]["_build"]["load"]
    assert (found[0].parent / load).exists(), load
    assert (found[0].parent / "static" / "style.js").exists()


def test_typescript_rendering_unit_tests() -> None:
    assert shutil.which("node"), "node is needed to build and test the labextension"
    if not (EXT / "node_modules" / "vitest").exists():
        subprocess.run([*_jlpm(), "install"], cwd=EXT, check=True, timeout=600)
    # Colours off (CI=true turns them on in vitest), and stripped should a tool force them.
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
    out = subprocess.run(
        [*_jlpm(), "test"], cwd=EXT, capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)
    assert re.search(r"Tests\s+\d+ passed", text), text
