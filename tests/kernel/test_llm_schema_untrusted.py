"""%%llm --schema against hostile answers and odd schemas: the model's text is untrusted
input, and a schema is whatever the notebook holds. Every failure is one line, never a hang
or a library traceback, and the raw answer stays on the error."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, NotRequired, TypedDict

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run
from pydantic import BaseModel, Field, field_validator

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.llm import LlmOptions, finish_value
from gleitzeit_jupyter.kernel.llm_schema import SchemaError, resolve_schema
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

# Exponential backtracking in a backtracking engine: a few dozen characters would take
# Python's re longer than the age of the universe.
EVIL = r"^(a|a)*$"
# The classic accidental one ("words separated by spaces"): re needs seconds at 24 chars.
WORDS = r"^(\w+\s?)*$"


class Strict(BaseModel):
    x: str

    @field_validator("x")
    @classmethod
    def _check(cls, value: str) -> str:
        raise KeyError("lookup table has no such entry")


class Aliased(BaseModel):
    full_name: str = Field(alias="fullName")
    age: int


@dataclasses.dataclass
class Where:
    city: str


class Invoice(TypedDict):
    amount: decimal.Decimal
    where: Where


@pytest.fixture
def srv(shell: InteractiveShell) -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=500, default_tokens=6) as s:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{s.url}']")
        shell.user_ns.update(Strict=Strict, Aliased=Aliased, Invoice=Invoice)
        yield s


def calls(srv: OllamaStandIn) -> int:
    return len(srv.requests_to("/api/generate"))


def problem(schema: Any, answer: str) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        resolve_schema("s", {"s": schema}).validate(answer)
    assert info.value.raw == answer
    return info.value


@pytest.mark.timeout(60)
def test_a_backtracking_pattern_cannot_hang_the_kernel() -> None:
    schema = {"type": "object", "properties": {"w": {"type": "string", "pattern": EVIL}}}
    err = problem(schema, json.dumps({"w": "a" * 40 + "!"}))
    assert "$.w" in str(err) and "pattern" in str(err)
    words = {"type": "object", "properties": {"w": {"type": "string", "pattern": WORDS}}}
    err = problem(words, json.dumps({"w": "a" * 60 + "!"}))
    assert "$.w" in str(err) and "does not match" in str(err)
    assert resolve_schema("s", {"s": words}).validate('{"w": "two words"}') == {"w": "two words"}


@pytest.mark.timeout(60)
def test_a_backtracking_pattern_on_keys_cannot_hang_the_kernel() -> None:
    schema = {
        "type": "object",
        "patternProperties": {WORDS: {"type": "integer"}},
        "additionalProperties": False,
    }
    key = "a" * 60 + "!"
    err = problem(schema, json.dumps({key: 1}))
    assert "additional properties are not allowed ('aaaa" in str(err)
    evil = {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}
    err = problem(evil, json.dumps({key: 1}))
    assert f"pattern {EVIL!r} took too long on 'aaaa" in str(err)
    ok = resolve_schema("s", {"s": schema}).validate('{"fine key": 3}')
    assert ok == {"fine key": 3}
    problem(schema, '{"fine key": "three"}')


@pytest.mark.parametrize("schema", [{"type": "array"}, {"type": "object"}])
def test_an_answer_nested_too_deeply_is_a_schema_error(schema: dict[str, Any]) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    err = problem(schema, deep)
    assert "nested too deeply" in str(err)


def test_an_answer_nested_too_deeply_is_a_one_line_error_with_plain_json() -> None:
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    with pytest.raises(UserError, match="nested too deeply"):
        finish_value(LlmOptions(fmt="json"), deep)


def test_a_validator_that_raises_any_exception_keeps_the_raw_answer(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm --schema Strict -o bad\nAnything")
    assert isinstance(cell.error, SchemaError), cell.text
    line = cell.text.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert "KeyError: 'lookup table has no such entry'" in line
    assert json.loads(shell.user_ns["bad"].raw)["x"]


def test_a_schema_dict_that_is_not_json_data_is_refused_before_any_call(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    looped: dict[str, Any] = {"type": "object"}
    looped["properties"] = {"me": looped}
    shell.user_ns.update(
        looped=looped,
        with_set={"type": "string", "enum": {"a", "b"}},
        dangling={"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
        remote={"$id": "https://example.com/a.json", "items": {"$ref": "other.json"}},
        own_id={"$id": "https://example.com/b.json", "$defs": {"x": {"type": "string"}}},
    )
    own = resolve_schema("own", {"own": {**shell.user_ns["own_id"], "$ref": "b.json#/$defs/x"}})
    assert own.validate('"text"') == "text"
    before = calls(srv)
    cases = {
        "looped": "--schema looped is not JSON data: it contains itself",
        "with_set": "--schema with_set is not JSON data: a set",
        "dangling": "--schema dangling: $ref '#/$defs/missing' points nowhere",
        "remote": "--schema remote: $ref 'other.json' points nowhere",
    }
    for name, message in cases.items():
        cell = run(shell, f"%%llm --schema {name}\nx")
        assert isinstance(cell.error, UserError), cell.text
        assert message in cell.text and len(cell.text.strip().splitlines()) == 1, cell.text
    assert calls(srv) == before


def test_a_self_referencing_schema_by_ref_still_validates(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["name"],
            }
        },
        "$ref": "#/$defs/node",
    }
    shell.user_ns["tree"] = tree
    cell = run(shell, "%%llm --schema tree -o t\nA family tree")
    assert cell.error is None, cell.text
    assert isinstance(shell.user_ns["t"]["name"], str)
    nested = {"name": "a", "kids": [{"name": "b", "kids": [{"name": 3}]}]}
    err = problem(tree, json.dumps(nested))
    assert "$.kids[0].kids[0].name" in str(err)


def test_typeddict_with_non_json_types_is_shown_as_json_and_stored_as_is(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm --schema Invoice -o inv\nAn invoice")
    assert cell.error is None, cell.text
    inv = shell.user_ns["inv"]
    assert isinstance(inv["amount"], decimal.Decimal) and isinstance(inv["where"], Where)
    shown = cell.data("application/json")[-1]
    assert shown["where"] == {"city": inv["where"].city}
    assert json.loads(json.dumps(shown)) == shown


def test_aliased_fields_fill_their_map_columns(shell: InteractiveShell, srv: OllamaStandIn) -> None:
    shell.user_ns["people"] = ["one", "two"]
    cell = run(shell, "%%llm --map people --schema Aliased -o out\nDescribe {item}")
    assert cell.error is None, cell.text
    out = shell.user_ns["out"]
    assert list(out.columns) == ["fullName", "age"]
    assert out["fullName"].map(type).eq(str).all() and out["age"].notna().all()


def test_schema_over_map_on_an_empty_or_duplicated_index(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    shell.user_ns["none"] = pd.Series([], dtype=object)
    cell = run(shell, "%%llm --map none --schema Aliased -o out\nDescribe {item}")
    assert cell.error is None, cell.text
    assert list(shell.user_ns["out"].columns) == ["fullName", "age"]
    assert len(shell.user_ns["out"]) == 0
    srv.faults.off_schema_marker = "BROKEN"
    shell.user_ns["dup"] = pd.Series(["fine", "BROKEN", "BROKEN"], index=["a", "b", "b"])
    cell = run(shell, "%%llm --map dup --schema Aliased -o out\nDescribe {item}")
    assert cell.error is None, cell.text
    out = shell.user_ns["out"]
    assert list(out.index) == ["a", "b", "b"] and out.loc["b"].isna().all().all()
    assert "2 failed" in cell.stdout


@pytest.mark.parametrize("answer", ['{"x": NaN}', '{"x": Infinity}', '{"x": 1e400}'])
def test_nan_and_infinity_are_not_json_and_cannot_slip_past_bounds(answer: str) -> None:
    # NaN compares false with everything: jsonschema's minimum/maximum would let it through.
    bounded = {"type": "object", "properties": {"x": {"type": "number", "minimum": 0}}}
    err = problem(bounded, answer)
    assert "not valid JSON" in str(err)
    with pytest.raises(UserError, match="not valid JSON"):
        finish_value(LlmOptions(fmt="json"), answer)


@pytest.mark.timeout(60)
def test_many_slow_strings_share_one_time_budget() -> None:
    # Each string alone stops at the per-match timeout; hundreds of them must not add up.
    schema = {"type": "array", "items": {"type": "string", "pattern": EVIL}}
    err = problem(schema, json.dumps(["a" * 40 + "!"] * 400))
    assert "took too long" in str(err) and "(and 399 more)" in str(err)


@dataclasses.dataclass
class Booking:
    when: datetime.datetime
    day: datetime.date
    ref: uuid.UUID
    price: decimal.Decimal
    where: Where


def test_dataclass_with_dates_decimals_and_nested_dataclasses(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    shell.user_ns["Booking"] = Booking
    cell = run(shell, "%%llm --schema Booking -o b\nA booking")
    assert cell.error is None, cell.text
    b = shell.user_ns["b"]
    assert isinstance(b, Booking) and isinstance(b.where, Where)
    assert isinstance(b.when, datetime.datetime) and isinstance(b.ref, uuid.UUID)
    shown = cell.data("application/json")[-1]
    assert shown["when"] == b.when.isoformat().replace("+00:00", "Z")
    assert shown["where"] == {"city": b.where.city} and shown["ref"] == str(b.ref)


def test_map_validators_run_off_the_event_loop(shell: InteractiveShell, srv: OllamaStandIn) -> None:
    # A validator may be slow (I/O, a bounded regex): on the loop it would stall every
    # other row in flight and the pool's health checks.
    import asyncio

    seen: list[bool] = []

    class Looked(BaseModel):
        name: str

        @field_validator("name")
        @classmethod
        def _where(cls, value: str) -> str:
            try:
                asyncio.get_running_loop()
                seen.append(True)
            except RuntimeError:
                seen.append(False)
            return value

    shell.user_ns.update(Looked=Looked, names=["a", "b", "c"])
    cell = run(shell, "%%llm --map names --schema Looked -o out\nName {item}")
    assert cell.error is None, cell.text
    assert seen == [False, False, False]
    assert shell.user_ns["out"]["name"].notna().all()


def test_answer_text_quoted_in_an_error_line_carries_no_control_sequences() -> None:
    class Echo(BaseModel):
        x: str

        @field_validator("x")
        @classmethod
        def _echo(cls, value: str) -> str:
            raise ValueError(f"unexpected {value}")

    err = problem(Echo, json.dumps({"x": "\x1b]52;c;ZXZpbA==\x07\x1b[2J"}))
    assert "\x1b]" not in str(err) and "\x07" not in str(err) and "\x1b[2J" not in str(err)
    assert all("\x1b]" not in e for e in err.errors)


class Part(TypedDict):
    code: str


class Order(TypedDict):
    part: Part
    extras: list[Part]
    qty: Annotated[int, Field(ge=1)]
    note: NotRequired[str]


class Loose(TypedDict, total=False):
    tag: str


def test_typeddicts_nested_constrained_and_partial(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    # typing.TypedDict all the way down, which Pydantic refuses before Python 3.12.
    shell.user_ns.update(Order=Order, Loose=Loose)
    cell = run(shell, "%%llm --schema Order -o order\nAn order")
    assert cell.error is None, cell.text
    fmt = srv.requests_to("/api/generate")[-1].body["format"]
    assert fmt["required"] == ["part", "extras", "qty"]
    assert fmt["properties"]["qty"]["minimum"] == 1
    order = shell.user_ns["order"]
    assert isinstance(order["part"]["code"], str) and order["qty"] >= 1
    err = problem(Order, '{"part": {"code": "a"}, "extras": [{"code": 1}], "qty": 0}')
    assert "extras.0.code" in str(err) and "qty" in " ".join(err.errors)
    assert resolve_schema("s", {"s": Loose}).validate("{}") == {}


def test_a_dotted_name_whose_attribute_raises_is_one_line(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    class Registry:
        @property
        def current(self) -> type:
            raise RuntimeError("registry not loaded")

    shell.user_ns["registry"] = Registry()
    cell = run(shell, "%%llm --schema registry.current\nx")
    assert isinstance(cell.error, UserError), cell.text
    line = cell.text.strip()
    assert line.endswith("--schema registry.current: RuntimeError: registry not loaded"), line
