"""The README's examples marked runnable really run, and its first lines are the two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    first = README.read_text().split("```", 2)[1]
    assert "./scripts/demo" in first and "./scripts/test" in first


def test_runnable_readme_examples_run(tmp_path: Path) -> None:
    blocks = re.findall(
        r"<!-- test: run this block -->\n```python\n(.*?)```", README.read_text(), re.S
    )
    assert blocks, "the README lost its runnable hub example"
    for k, code in enumerate(blocks):
        script = tmp_path / f"example_{k}.py"
        script.write_text(code)
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert "beta" not in out.stdout.splitlines()[0]  # the failing instance got no results
