"""The work behind ``%%sandbox`` (filled in against the sandbox provider)."""

from __future__ import annotations

from typing import Any


def run_cell(rt: Any, code: str, ns: dict[str, Any], **kwargs: Any) -> None:
    raise NotImplementedError


def reset_session(rt: Any, session: str) -> None:
    raise NotImplementedError
