"""Checked option values of ``%%llm``: argparse ``type=`` functions.

A bad value is caught while the line is parsed, as argparse's one-line usage error
("argument -t/--temperature: ..."), instead of reaching a server that would reject it after
the cell has already waited for a model, or silently accept it (a negative temperature).
Options that name notebook values (``--schema``, ``--image``) are resolved by
:func:`namespace_options` before any call is made.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ..hub.balancing import STRATEGIES
from ..hub.errors import UserError
from .llm_images import image_column, resolve_images
from .llm_schema import resolve_schema

__all__ = [
    "STRATEGIES",
    "THINK_LEVELS",
    "at_least_one",
    "namespace_options",
    "strategy_name",
    "strategy_problem",
    "temperature",
]

#: ``--think LEVEL``: Ollama's levels (bare ``--think`` sends true).
THINK_LEVELS = ("low", "medium", "high")

# Ollama's and OpenAI's documented range; beyond 2 sampling is noise.
_MAX_TEMPERATURE = 2.0


def temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (use 0 to 2)") from None
    if not 0.0 <= value <= _MAX_TEMPERATURE:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text} is out of range (use 0 to 2)")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        problem = f"{text!r} is not a whole number (use 1 or more)"
        raise argparse.ArgumentTypeError(problem) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is too small (use 1 or more)")
    return value


def strategy_problem(name: str) -> str | None:
    """Why ``name`` is not a strategy, or None if it is one."""
    if name in STRATEGIES:
        return None
    return f"unknown strategy {name!r}; one of: {', '.join(STRATEGIES)}"


def strategy_name(text: str) -> str:
    problem = strategy_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def namespace_options(args: Any, ns: Mapping[str, Any]) -> dict[str, Any]:
    """LlmOptions fields from options that name notebook values: the format, the resolved
    ``--schema``, the ``--image`` data (``{column}`` ones are kept for ``--map``), ``--think``.
    """
    schema = resolve_schema(args.schema, ns) if getattr(args, "schema", None) else None
    fmt = args.format
    if schema is not None:
        if fmt in ("text", "code"):
            raise UserError(f"--schema and -f {fmt} do not mix: a schema's answer is JSON")
        fmt = "json"
    specs = list(getattr(args, "image", None) or [])
    columns = [c for c in map(image_column, specs) if c is not None]
    if columns and not getattr(args, "map_expr", None):
        raise UserError(
            f"--image {{{columns[0]}}} takes each row's image from a column; use it with --map"
        )
    static = [s for s in specs if image_column(s) is None]
    return {
        "fmt": fmt,
        "schema": schema,
        "images": resolve_images(static, ns),
        "image_columns": columns,
        "think": getattr(args, "think", None),
    }
