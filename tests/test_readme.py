"""The README's first lines are the two commands, and the provider example really runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROVIDER_API = ROOT / "docs" / "provider-api.md"


def test_readme_starts_with_the_demo_and_test_commands() -> None:
    first = README.read_text().split("```", 2)[1]
    assert "./scripts/demo" in first and "./scripts/test" in first


def test_the_provider_example_runs_and_routes_around_the_failing_instance(
    tmp_path: Path,
) -> None:
    blocks = re.findall(
        r"<!-- test: run this block -->\n```python\n(.*?)```", PROVIDER_API.read_text(), re.S
    )
    assert blocks, "docs/provider-api.md lost its runnable provider example"
    for k, code in enumerate(blocks):
        script = tmp_path / f"example_{k}.py"
        script.write_text(code)
        out = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert "beta" not in out.stdout.splitlines()[0]  # the failing instance got no results
