"""``%%llm --schema NAME``: a structured answer, validated into the type the user named.

NAME may be a Pydantic model class, a dataclass, a ``TypedDict`` or a JSON-schema dict. Its
JSON schema goes to Ollama as ``format`` (Ollama constrains generation to it); the answer is
validated and returned as an instance of the model (a dict for a TypedDict or a plain schema).

Validation uses well-kept libraries rather than a hand-rolled checker: Pydantic for models,
dataclasses and TypedDicts (``TypeAdapter``; imported only when such a schema is used, so
Pydantic is not a dependency), and ``jsonschema`` for plain dicts (every Jupyter install has
it through nbformat; it is a declared dependency here), its regex keywords bounded in time
(:mod:`.schema_patterns`). The answer is untrusted input: whatever it holds, checking it ends
in a value or a :class:`SchemaError` with the raw text, never a hang or a library traceback.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, is_typeddict

from ..hub.errors import UserError
from .render import terminal_safe
from .typed_dicts import pydantic_ready

__all__ = ["Schema", "SchemaError", "parse_json", "resolve_schema", "to_jsonable"]


class SchemaError(UserError):
    """The model's answer does not match ``--schema``.

    ``raw`` is the answer as the model wrote it; ``errors`` lists every problem found (one
    line each, the first is in the message); ``thinking`` is the model's reasoning (with
    ``--think``). With ``-o VAR`` the failed cell stores this error in VAR, so ``VAR.raw``
    still has the answer.
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str = "",
        errors: tuple[str, ...] = (),
        instance: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, instance=instance, hint=hint)
        self.raw = raw
        self.errors = errors
        self.thinking = ""


@dataclass(frozen=True)
class Schema:
    """A resolved ``--schema``: what goes to Ollama and how an answer is checked."""

    name: str
    json_schema: dict[str, Any]
    _check: Callable[[str], tuple[Any, tuple[str, ...]]]
    _dump: Callable[[Any], Any] | None = None  # a validated value as plain JSON data
    _attrs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # alias -> attribute

    @property
    def fields(self) -> tuple[str, ...]:
        """Top-level properties, in order: the columns of a ``--map`` result."""
        props = self.json_schema.get("properties")
        return tuple(props) if isinstance(props, Mapping) else ()

    def validate(self, text: str) -> Any:
        """The answer as an instance of the schema's type; SchemaError if it does not fit."""
        value, problems = self._check(text)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SchemaError(
                f"the answer does not match schema {self.name}: {problems[0]}{more}",
                raw=text,
                errors=problems,
                hint="the model's text is on the error's .raw",
            )
        return value

    def columns(self, value: Any) -> dict[str, Any]:
        """One validated answer as a row: field name to value."""
        if not self.fields:
            return {"value": value}
        if isinstance(value, Mapping):
            return {f: value.get(f) for f in self.fields}
        # A Pydantic field with an alias is a property by its alias, an attribute by its name.
        return {f: getattr(value, self._attrs.get(f, f), None) for f in self.fields}

    def jsonable(self, value: Any) -> Any:
        """A validated answer as plain JSON data, for the notebook's JSON view."""
        return self._dump(value) if self._dump is not None else to_jsonable(value)


def _one_line(text: str) -> str:
    # Problems quote the answer (untrusted): no control sequence may reach a terminal.
    return " ".join(terminal_safe(str(text)).split())


_TOO_DEEP = "the answer is nested too deeply to check"


def _not_finite(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def parse_json(text: str) -> Any:
    """JSON as RFC 8259 has it: Python's json also reads NaN and Infinity, and NaN compares
    false with any bound, so ``"minimum": 0`` would let it through. ValueError (a
    ``json.JSONDecodeError`` for broken syntax) when the text is not JSON."""
    return json.loads(text, parse_constant=_not_finite, parse_float=_finite)


def _raised(exc: BaseException) -> str:
    # A user's validator may raise anything; its error is the answer's problem, in one line.
    return _one_line(f"a validator raised {type(exc).__name__}: {exc}")


def _pydantic_problems(exc: Any) -> tuple[str, ...]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = _one_line(err.get("msg", ""))
        out.append(f"{loc}: {msg}" if loc else msg)
    return tuple(out) or (_one_line(str(exc)),)


def _pydantic_schema(name: str, target: Any) -> Schema:
    try:
        from pydantic import TypeAdapter, ValidationError
    except ImportError:
        raise UserError(
            f"--schema {name}: a {_kind(target)} is validated with Pydantic, which is not"
            " installed",
            hint="pip install pydantic, or pass a JSON-schema dict",
        ) from None
    try:
        adapter: Any = TypeAdapter(pydantic_ready(target))
        json_schema = adapter.json_schema()
    except Exception as exc:  # Pydantic's own errors say what it cannot handle
        raise UserError(
            f"--schema {name}: {_one_line(str(exc)).split(' For further')[0]}"
        ) from None

    def check(text: str) -> tuple[Any, tuple[str, ...]]:
        try:
            return adapter.validate_json(text), ()
        except ValidationError as exc:
            return None, _pydantic_problems(exc)
        except RecursionError:
            return None, (_TOO_DEEP,)
        except Exception as exc:
            return None, (_raised(exc),)

    def dump(value: Any) -> Any:
        try:
            return adapter.dump_python(value, mode="json", by_alias=True)
        except Exception:  # a value a validator replaced with something Pydantic cannot dump
            return to_jsonable(value)

    return Schema(name, json_schema, check, dump, _aliases(target))


def _aliases(target: Any) -> dict[str, str]:
    fields = getattr(target, "model_fields", None) if _is_pydantic_model(target) else None
    out: dict[str, str] = {}
    for attr, info in (fields or {}).items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        if alias and alias != attr:
            out[alias] = attr
    return out


def _dict_schema(name: str, schema: Mapping[str, Any]) -> Schema:
    import jsonschema
    from jsonschema.exceptions import SchemaError as BadSchema
    from jsonschema.exceptions import relevance
    from referencing.exceptions import Unresolvable

    from .schema_patterns import bounded_patterns, pattern_budget

    try:
        plain = json.loads(json.dumps(schema))  # a plain JSON tree, as it goes on the wire
    except (TypeError, ValueError, RecursionError) as exc:
        raise UserError(f"--schema {name} is not JSON data: {_not_json(exc)}") from None
    cls = jsonschema.validators.validator_for(plain)
    try:
        cls.check_schema(plain)
    except BadSchema as exc:
        problem = _one_line(exc.message)
        raise UserError(f"--schema {name} is not a valid JSON schema: {problem}") from None
    _check_local_refs(name, plain)
    validator = bounded_patterns(cls)(plain)

    def check(text: str) -> tuple[Any, tuple[str, ...]]:
        try:
            value = parse_json(text)
        except json.JSONDecodeError as exc:
            return None, (f"not valid JSON ({exc.msg} at char {exc.pos})",)
        except RecursionError:
            return None, (_TOO_DEEP,)
        except ValueError as exc:
            return None, (f"not valid JSON ({exc})",)
        try:
            with pattern_budget():
                found = sorted(validator.iter_errors(value), key=relevance)
        except RecursionError:
            return value, (_TOO_DEEP,)
        except Unresolvable as exc:
            return value, (_one_line(f"the schema's $ref cannot be resolved: {exc}"),)
        problems = tuple(f"{e.json_path}: {_one_line(e.message)}" for e in found)
        return value, problems

    return Schema(name, plain, check)


def _not_json(exc: BaseException) -> str:
    if isinstance(exc, ValueError) and "Circular reference" in str(exc):
        return "it contains itself (use $ref for a recursive schema)"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    m = re.match(r"Object of type (\w+)", str(exc))
    return f"a {m.group(1)} is not JSON" if m else _one_line(str(exc))


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _has_nested_id(node: Any, top: bool = True) -> bool:
    if isinstance(node, dict):
        if not top and "$id" in node:
            return True
        return any(_has_nested_id(v, False) for v in node.values())
    return isinstance(node, list) and any(_has_nested_id(v, False) for v in node)


def _check_local_refs(name: str, plain: Any) -> None:
    """A ``$ref`` that points nowhere is the schema's mistake: said before the call, not
    after a generation. (Nested ``$id`` scopes are left to jsonschema.)"""
    if not isinstance(plain, dict) or _has_nested_id(plain):
        return
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012, specification_with

    spec = specification_with(plain.get("$schema", ""), default=DRAFT202012)
    resolver = Registry().resolver_with_root(spec.create_resource(plain))
    # Without nested $id scopes every $ref resolves against the root; one into another
    # document never does (nothing is fetched).
    for ref in dict.fromkeys(_refs(plain)):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise UserError(f"--schema {name}: $ref {ref!r} points nowhere") from None


def _kind(target: Any) -> str:
    if dataclasses.is_dataclass(target):
        return "dataclass"
    if is_typeddict(target):
        return "TypedDict"
    return type(target).__name__


def _is_pydantic_model(target: Any) -> bool:
    return isinstance(target, type) and callable(getattr(target, "model_json_schema", None))


def resolve_schema(name: str, ns: Mapping[str, Any]) -> Schema:
    """The schema named NAME in the user namespace (``name`` may be dotted: ``models.Review``)."""
    root, *attrs = name.split(".")
    if root not in ns:
        raise UserError(
            f"--schema {name}: no such variable",
            hint="define a Pydantic model, dataclass, TypedDict or JSON-schema dict first",
        )
    target = ns[root]
    for attr in attrs:
        try:
            target = getattr(target, attr)
        except AttributeError:
            raise UserError(f"--schema {name}: {type(target).__name__} has no {attr!r}") from None
        except Exception as exc:  # a property of the user's that raised
            raise UserError(_one_line(f"--schema {name}: {type(exc).__name__}: {exc}")) from None
    if isinstance(target, Mapping):
        return _dict_schema(name, target)
    if _is_pydantic_model(target) or (
        isinstance(target, type) and (dataclasses.is_dataclass(target) or is_typeddict(target))
    ):
        return _pydantic_schema(name, target)
    raise UserError(
        f"--schema {name} is a {type(target).__name__}; it must be a Pydantic model class,"
        " a dataclass, a TypedDict or a JSON-schema dict"
    )


def to_jsonable(value: Any) -> Any:
    """A validated answer as plain JSON data, for the notebook's JSON view."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json.loads(json.dumps(dataclasses.asdict(value), default=str))
    return value
