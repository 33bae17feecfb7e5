"""``typing.TypedDict`` for Pydantic before Python 3.12.

Pydantic takes only ``typing_extensions.TypedDict`` there. A user's ``typing.TypedDict`` is
rebuilt as one with the same fields, required keys and ``Annotated`` constraints, and so is
every ``typing.TypedDict`` it holds (``inner: Inner``, ``items: list[Item]``), so it
validates exactly as the user's class would.
"""

from __future__ import annotations

import functools
import operator
import sys
import types
import typing
from typing import Any, get_args, get_origin, get_type_hints, is_typeddict

__all__ = ["pydantic_ready"]


def pydantic_ready(target: Any) -> Any:
    """``target``, with its ``typing.TypedDict`` classes rebuilt where Pydantic needs it."""
    if sys.version_info >= (3, 12):
        return target
    return _rebuilt(target, {})


def _is_typing_typeddict(tp: Any) -> bool:
    return is_typeddict(tp) and type(tp).__module__ == "typing"


def _rebuilt(tp: Any, done: dict[Any, Any]) -> Any:
    if _is_typing_typeddict(tp):
        return _typeddict(tp, done)
    args = get_args(tp)
    if not args:
        return tp
    new = tuple(_rebuilt(a, done) for a in args)
    if new == args:
        return tp
    origin = get_origin(tp)
    if origin is typing.Annotated:
        return typing.Annotated[new]  # (type, *metadata)
    if isinstance(tp, types.UnionType):
        return functools.reduce(operator.or_, new)
    if isinstance(tp, types.GenericAlias):
        return types.GenericAlias(origin, new)
    copy_with = getattr(tp, "copy_with", None)  # typing's own aliases: Optional, List, ...
    return copy_with(new) if callable(copy_with) else tp


def _typeddict(tp: Any, done: dict[Any, Any]) -> Any:
    if tp in done:
        # A TypedDict that holds itself: left as it is (Pydantic then says what it needs).
        return done[tp]
    import typing_extensions as te

    done[tp] = tp
    required = getattr(tp, "__required_keys__", frozenset())
    fields = {}
    for key, hint in get_type_hints(tp, include_extras=True).items():
        # The wrapper says it when annotations are strings (__future__ annotations), where
        # Python 3.11's __required_keys__ cannot see it.
        wrapper = get_origin(hint)
        needed = key in required
        if wrapper in (typing.Required, typing.NotRequired):
            needed = wrapper is typing.Required
            hint = get_args(hint)[0]
        hint = _rebuilt(hint, done)
        fields[key] = hint if needed else te.NotRequired[hint]
    done[tp] = te.TypedDict(tp.__name__, fields)  # type: ignore[operator]
    return done[tp]
