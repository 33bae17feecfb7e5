"""``{name}`` interpolation of prompts and templates from the user namespace.

Only plain references are substituted: ``{name}``, ``{name.attr.attr}``, ``{In[3]}``,
``{Out[3]}``, and (given an error log) ``{Err}`` / ``{Err[3]}``, the traceback text of the last
failed cell / of cell 3. Text inside fenced code blocks and inline code spans is never
touched: pasted code reaches the model as written. Any other brace text (JSON, dict
literals, ``{x + 1}``) is left exactly as written, because prompts routinely contain code.
``{{`` writes a literal ``{`` (and the ``}}`` that closes it a literal ``}``). A reference to
a name that does not exist is an error naming it rather than a silently unexpanded literal.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Any

from ..hub.errors import UserError
from .code_spans import code_ranges
from .error_log import ErrorLog

__all__ = ["InterpolationError", "interpolate", "references"]

_REF = re.compile(
    r"\{(?:(?P<hist>In|Out|Err)\[(?P<num>-?\d+)\]"
    r"|(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))\}"
)


class InterpolationError(UserError):
    """A ``{reference}`` in a prompt that cannot be resolved."""


def _is_reference(match: re.Match[str]) -> bool:
    path = match.group("path")
    # {True}, {None}, {pass}: code, not a reference.
    return path is None or not keyword.iskeyword(path.split(".", 1)[0])


def _prose(text: str) -> list[tuple[int, int]]:
    """The ranges of ``text`` outside code, where references are substituted."""
    ranges: list[tuple[int, int]] = []
    pos = 0
    for start, end in code_ranges(text):
        if start > pos:
            ranges.append((pos, start))
        pos = max(pos, end)
    if pos < len(text) or not ranges:
        ranges.append((pos, len(text)))
    return ranges


def references(text: str) -> list[str]:
    """The references a template uses outside code, in order (``"df.shape"``, ``"In[3]"``)."""
    return [
        m.group(0)[1:-1]
        for start, end in _prose(text)
        for m in _REF.finditer(text, start, end)
        if _is_reference(m)
    ]


def _error_text(ref: str, num: str | None, errors: ErrorLog) -> str:
    if num is None:
        if errors.latest is None:
            raise InterpolationError(f"{ref}: no cell has failed yet in this session")
        return errors.latest
    text = errors.cell(int(num))
    if text is None:
        raise InterpolationError(
            f"{ref}: cell {num} did not fail (or failed too long ago to be kept)",
            hint="write {{" + ref[1:-1] + "}} for literal braces",
        )
    return text


def _resolve(
    match: re.Match[str], namespaces: tuple[Mapping[str, Any], ...], errors: ErrorLog | None
) -> Any:
    ref = match.group(0)
    hist = match.group("hist")
    if errors is not None and (hist == "Err" or match.group("path") == "Err"):
        return _error_text(ref, match.group("num"), errors)
    if hist == "Err":
        raise InterpolationError(f"{ref}: failed cells are only recorded in a notebook shell")
    if hist is not None:
        num = int(match.group("num"))
        for ns in namespaces:
            if hist in ns:
                store = ns[hist]
                break
        else:
            raise InterpolationError(f"{ref}: no input/output history in this session")
        try:
            return store[num]
        except (IndexError, KeyError):
            what = "input" if hist == "In" else "output"
            raise InterpolationError(
                f"{ref}: cell {num} has no {what}",
                hint="write {{" + ref[1:-1] + "}} for literal braces",
            ) from None
    root, *attrs = match.group("path").split(".")
    for ns in namespaces:
        if root in ns:
            value = ns[root]
            break
    else:
        raise InterpolationError(
            f"unknown name {root!r} in {ref}",
            hint="define it first, or write {{" + ref[1:-1] + "}} for literal braces",
        )
    done = root
    for attr in attrs:
        try:
            value = getattr(value, attr)
        except AttributeError:
            raise InterpolationError(
                f"{done} ({type(value).__name__}) has no attribute {attr!r} in {ref}"
            ) from None
        done = f"{done}.{attr}"
    return value


def interpolate(text: str, *namespaces: Mapping[str, Any], errors: ErrorLog | None = None) -> str:
    """Substitute references outside code in ``text`` from ``namespaces`` (first one that
    has the name); ``errors`` resolves ``{Err}`` and ``{Err[N]}``."""
    if "{" not in text and "}" not in text:
        return text
    out: list[str] = []
    pos = 0
    for start, end in _prose(text):
        out.append(text[pos:start])
        out.append(_interpolate_prose(text[start:end], namespaces, errors))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _interpolate_prose(
    text: str, namespaces: tuple[Mapping[str, Any], ...], errors: ErrorLog | None
) -> str:
    out: list[str] = []
    i, n = 0, len(text)
    escaped = 0  # open "{{" whose "}}" should become "}"
    depth = 0  # plain "{" left untouched, so their "}" stay untouched too
    while i < n:
        if text.startswith("{{", i):
            out.append("{")
            escaped += 1
            i += 2
            continue
        ch = text[i]
        if ch == "{":
            m = _REF.match(text, i)
            if m is not None and _is_reference(m):
                out.append(str(_resolve(m, namespaces, errors)))
                i = m.end()
                continue
            depth += 1
        elif ch == "}":
            if depth > 0:
                depth -= 1
            elif escaped > 0 and text.startswith("}}", i):
                escaped -= 1
                out.append("}")
                i += 2
                continue
        out.append(ch)
        i += 1
    return "".join(out)
