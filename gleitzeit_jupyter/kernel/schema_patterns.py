"""JSON-schema regexes that cannot hang the kernel on a model's answer.

jsonschema matches ``pattern``, ``patternProperties`` and the keys ``additionalProperties``
leaves over with Python's ``re``, a backtracking engine: a pattern as ordinary as
``^(\\w+\\s?)*$`` takes exponential time on a string that almost matches, and the strings here
are a model's answer, which is untrusted input. These keywords are checked instead with the
``regex`` module (the same syntax as ``re``), whose matches take a timeout; a match that runs
out of time is a validation error naming the pattern. All matches of one check share a time
budget (:func:`pattern_budget`), so thousands of slow strings do not add up.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import regex
from jsonschema import ValidationError
from jsonschema.validators import extend

__all__ = ["bounded_patterns", "pattern_budget"]

#: Seconds one pattern may spend on one string.
MATCH_TIMEOUT_S = 0.5
#: Seconds all the matches of one answer may spend together.
BUDGET_S = 2.0

_deadline: ContextVar[float | None] = ContextVar("_deadline", default=None)


@contextmanager
def pattern_budget(seconds: float = BUDGET_S) -> Iterator[None]:
    """Bound every pattern match made inside the block to ``seconds`` in total."""
    token = _deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def _found(pattern: str, text: str) -> bool | None:
    """Whether ``pattern`` occurs in ``text``; None when it ran out of time."""
    deadline = _deadline.get()
    timeout = MATCH_TIMEOUT_S
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            return None
    try:
        return regex.search(pattern, text, timeout=timeout) is not None
    except TimeoutError:
        return None
    except regex.error:
        return False  # a pattern re accepted and regex does not: as if nothing matched


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _too_slow(pattern: str, text: str) -> ValidationError:
    return ValidationError(f"pattern {pattern!r} took too long on {_short(text)}")


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "string"):
        return
    found = _found(pattern, instance)
    if found is None:
        yield _too_slow(pattern, instance)
    elif not found:
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            found = _found(pattern, key)
            if found is None:
                yield _too_slow(pattern, key)
            elif found:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = []
    for key in instance:
        if key in named:
            continue
        hits = [_found(p, key) for p in patterns]
        if None in hits:
            continue  # reported by patternProperties
        if not any(hits):
            extras.append(key)
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif extra is False and extras:
        unexpected = ", ".join(_short(k) for k in sorted(extras))
        yield ValidationError(f"additional properties are not allowed ({unexpected})")


def bounded_patterns(cls: Any) -> Any:
    """``cls`` (a jsonschema validator class) with its regex keywords bounded in time."""
    return extend(
        cls,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
