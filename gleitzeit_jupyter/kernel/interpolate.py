"""``{name}`` interpolation of prompts and templates from the user namespace.

Only plain references are substituted: ``{name}``, ``{name.attr.attr}``, ``{In[3]}`` and
``{Out[3]}``. Any other brace text (code, JSON, dict literals, ``{x + 1}``) is left exactly as
written, because prompts routinely contain code. ``{{`` writes a literal ``{`` (and the
``}}`` that closes it a literal ``}``). A reference to a name that does not exist is an error
naming it rather than a silently unexpanded literal.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping
from typing import Any

from ..hub.errors import UserError

__all__ = ["InterpolationError", "interpolate", "references"]

_REF = re.compile(
    r"\{(?:(?P<hist>In|Out)\[(?P<num>-?\d+)\]"
    r"|(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*))\}"
)


class InterpolationError(UserError):
    """A ``{reference}`` in a prompt that cannot be resolved."""


def _is_reference(match: re.Match[str]) -> bool:
    path = match.group("path")
    # {True}, {None}, {pass}: code, not a reference.
    return path is None or not keyword.iskeyword(path.split(".", 1)[0])


def references(text: str) -> list[str]:
    """The references a template uses, in order (``"df.shape"``, ``"In[3]"``)."""
    return [m.group(0)[1:-1] for m in _REF.finditer(text) if _is_reference(m)]


def _resolve(match: re.Match[str], namespaces: tuple[Mapping[str, Any], ...]) -> Any:
    ref = match.group(0)
    hist = match.group("hist")
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


def interpolate(text: str, *namespaces: Mapping[str, Any]) -> str:
    """Substitute references in ``text`` from ``namespaces`` (first one that has the name)."""
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
                out.append(str(_resolve(m, namespaces)))
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
