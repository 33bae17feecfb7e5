"""The Python floor the package declares is the one its code needs."""

from __future__ import annotations

import pathlib
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_requires_python_311_which_the_timeouts_rely_on():
    # TimeoutError from asyncio.wait_for and asyncio.timeout() exist from 3.11 on; 3.10
    # raised asyncio.TimeoutError, which the hub's `except TimeoutError` would not catch.
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["requires-python"] == ">=3.11"
    assert meta["tool"]["ruff"]["target-version"] == "py311"


def test_no_python_310_fallbacks_remain():
    sources = (ROOT / "gleitzeit_jupyter").rglob("*.py")
    offenders = [p.name for p in sources if "_timeout_cm" in p.read_text()]
    assert offenders == []
