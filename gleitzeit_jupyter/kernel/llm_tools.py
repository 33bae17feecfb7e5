"""Kernel functions as tools for ``%%llm --tools``: a JSON schema from the signature and the
docstring, and calls whose arguments are checked against it.

The schema is what Ollama reads from ``tools[].function.parameters``: an object whose
properties each carry ``type`` (a name or a list of names), ``description``, ``enum`` and
``items``. Ollama drops what it does not know (``anyOf``, ``$ref``), so types are written out
flat here rather than passed through as pydantic emits them. Arguments are validated and
coerced with pydantic (``"3"`` for an ``int`` becomes 3), the way the model's JSON is usually
a little off.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import enum
import inspect
import json
import reprlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docstring_parser
import pydantic

from ..hub.errors import UserError

__all__ = [
    "SANDBOX",
    "Tool",
    "ToolError",
    "describe_value",
    "json_type",
    "tool_from_function",
    "tool_names",
    "truncate",
]

#: The name in ``--tools`` that stands for the sandbox's ``python`` tool.
SANDBOX = "sandbox"

_SIMPLE: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    type(None): "null",
    dict: "object",
    list: "array",
    tuple: "array",
    set: "array",
    frozenset: "array",
}


class ToolError(UserError):
    """A tool call the model got wrong (unknown tool, bad arguments): told to the model."""


@dataclass
class Tool:
    """One tool offered to the model: its wire spec and how to run a call of it."""

    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[dict[str, Any]], Any]
    kind: str = "function"  # "function" (a kernel function) or "sandbox"
    close: Callable[[], None] | None = None  # called once when the cell's loop ends

    def spec(self) -> dict[str, Any]:
        """The entry of Ollama's ``tools`` list."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


def tool_names(text: str) -> list[str]:
    """argparse ``type=`` for ``--tools f,g``: the names, each a Python identifier."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # IPython's magic line splitting keeps quotes
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no tool named (use --tools f,g or --tools sandbox)")
    for n in names:
        if not n.isidentifier():
            raise argparse.ArgumentTypeError(f"{n!r} is not a function name")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("a tool is named twice")
    return names


def json_type(annotation: Any) -> dict[str, Any]:
    """The flat JSON schema of one parameter type (no ``$ref``, no ``anyOf``)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [m.value for m in annotation]
        kinds = {_SIMPLE.get(type(v)) for v in values} - {None}
        out: dict[str, Any] = {"enum": values}
        if len(kinds) == 1:
            out["type"] = kinds.pop()
        return out
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return json_type(args[0])
    if origin is typing.Literal:
        kinds = {_SIMPLE.get(type(v)) for v in args} - {None}
        lit: dict[str, Any] = {"enum": list(args)}
        if len(kinds) == 1:
            lit["type"] = kinds.pop()
        return lit
    if origin in (typing.Union, types.UnionType):
        parts = [json_type(a) for a in args]
        names: list[str] = []
        for p in parts:
            t = p.get("type")
            for name in t if isinstance(t, list) else [t] if t else []:
                if name not in names:
                    names.append(name)
        merged: dict[str, Any] = {}
        for p in parts:
            for key in ("items", "enum", "properties"):
                if key in p and key not in merged:
                    merged[key] = p[key]
        if names:
            merged["type"] = names[0] if len(names) == 1 else names
        return merged
    if origin in (list, tuple, set, frozenset) or (
        isinstance(origin, type) and issubclass(origin, (list, tuple, set, frozenset))
    ):
        out = {"type": "array"}
        if args and args[0] is not Ellipsis:
            item = json_type(args[0])
            if item:
                out["items"] = item
        return out
    if origin is dict or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return {"type": "object"}
    # Models, dataclasses, TypedDicts: pydantic knows their fields.
    try:
        schema = pydantic.TypeAdapter(annotation).json_schema()
    except Exception:
        return {}
    flat = {k: schema[k] for k in ("type", "properties", "required", "enum") if k in schema}
    return flat or {}


def _doc_params(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    doc = inspect.getdoc(fn) or ""
    if not doc:
        return "", {}
    parsed = docstring_parser.parse(doc)
    summary = "\n\n".join(p for p in (parsed.short_description, parsed.long_description) if p)
    params = {p.arg_name: (p.description or "").strip() for p in parsed.params}
    return summary.strip(), params


def tool_from_function(
    name: str, fn: Any, *, await_with: Callable[[Any], Any] | None = None
) -> Tool:
    """A :class:`Tool` for the kernel callable ``fn``, offered to the model as ``name``.

    An ``async def`` tool's coroutine is run to its result by ``await_with`` (the kernel
    passes its runtime's ``run``, so the stop button cancels it); without one, by
    :func:`asyncio.run` in a thread of its own.
    """
    if not callable(fn):
        raise UserError(f"--tools {name}: {name!r} is a {type(fn).__name__}, not a function")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise UserError(
            f"--tools {name}: {name} is a generator function; a tool returns its result"
            f" (wrap it: def {name}_list(...): return list({name}(...)))"
        )
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise UserError(f"--tools {name}: cannot read the signature of {name!r}") from None
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = {}
    summary, docs = _doc_params(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}  # the checking model's field -> the parameter
    positional: list[str] = []
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue  # the model names its arguments; *args/**kwargs take no named value
        ann = hints.get(pname, param.annotation)
        prop = json_type(ann) or {"type": "string"}
        if docs.get(pname):
            prop["description"] = docs[pname]
        properties[pname] = prop
        has_default = param.default is not param.empty
        if not has_default:
            required.append(pname)
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(pname)
        field_type = Any if ann is inspect.Parameter.empty else ann
        # Fields get neutral names, the parameter being the alias: pydantic refuses or warns
        # about names like _x, model_config, schema or json, all fine for a Python function.
        field = f"p{len(fields)}"
        names[field] = pname
        default = param.default if has_default else ...
        fields[field] = (field_type, pydantic.Field(default, alias=pname))
    try:
        model = pydantic.create_model(  # type: ignore[call-overload]
            f"{name}_arguments",
            __config__=pydantic.ConfigDict(
                extra="forbid", arbitrary_types_allowed=True, protected_namespaces=()
            ),
            **fields,
        )
    except Exception as exc:
        raise UserError(f"--tools {name}: cannot check its arguments ({exc})") from None
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required

    def run(arguments: dict[str, Any]) -> Any:
        try:
            checked = model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise ToolError(f"invalid arguments for {name}: {_first_error(exc)}") from None
        # Only the arguments given: a parameter the model left out keeps fn's own default.
        given = {names[k]: getattr(checked, k) for k in checked.model_fields_set}
        args = [given.pop(p) for p in positional if p in given]
        result = fn(*args, **given)
        if inspect.isawaitable(result):
            result = (await_with or _run_in_thread)(_as_coroutine(result))
        return result

    return Tool(name=name, description=summary, parameters=parameters, run=run)


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


def _run_in_thread(coro: Any) -> Any:
    # asyncio.run cannot run inside a running loop (ipykernel's cells have one).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _first_error(exc: pydantic.ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "arguments"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    shown = describe_value(first.get("input"), 60)
    if first.get("type") == "missing":
        return f"{where}: missing{more}"
    if first.get("type") == "extra_forbidden":
        return f"{where}: no such parameter{more}"
    return f"{where}: {first.get('msg')} (got {shown}){more}"


def describe_value(value: Any, limit: int | None = None) -> str:
    """``value`` as a model reads it: text as is, data as JSON, else ``str``; with a
    ``limit``, a longer text is cut with a marker saying how long it was."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=_not_json)
        except (TypeError, ValueError, RecursionError):
            try:
                # str, not repr: a DataFrame's table, numpy's 3 rather than np.int64(3).
                text = str(value)
            except RecursionError:
                text = reprlib.repr(value)  # nested deeper than str can go: cut by depth
    return text if limit is None else truncate(text, limit)


def _not_json(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [truncated: {len(text):,} characters in all]"
