"""Checked option values of ``%%llm``: argparse ``type=`` functions.

A bad value is caught while the line is parsed, as argparse's one-line usage error
("argument -t/--temperature: ..."), instead of reaching a server that would reject it after
the cell has already waited for a model, or silently accept it (a negative temperature).
"""

from __future__ import annotations

import argparse

from ..hub.balancing import STRATEGIES

__all__ = ["STRATEGIES", "at_least_one", "strategy_name", "strategy_problem", "temperature"]

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
