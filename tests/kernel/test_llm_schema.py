"""%%llm --schema: the schema goes to Ollama as format, the answer comes back as the type."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Literal, TypedDict

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run
from pydantic import BaseModel, TypeAdapter

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.llm_schema import SchemaError
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


class Review(BaseModel):
    sentiment: Literal["positive", "negative", "mixed"]
    score: int
    summary: str | None = None


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: str


class Person(TypedDict):
    name: str
    age: int


PLAIN = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 1}},
    "required": ["city", "population"],
}


@pytest.fixture
def srv(shell: InteractiveShell) -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=500, default_tokens=6) as s:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{s.url}']")
        shell.user_ns.update(Review=Review, Point=Point, Person=Person, plain=PLAIN)
        yield s


def sent_format(srv: OllamaStandIn) -> object:
    return srv.requests_to("/api/generate")[-1].body["format"]


def test_pydantic_model_answer_is_an_instance_and_its_schema_is_the_format(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm --schema Review -o r\nClassify: the kettle boils fast")
    assert cell.error is None, cell.text
    assert sent_format(srv) == Review.model_json_schema()
    r = shell.user_ns["r"]
    assert isinstance(r, Review) and r.sentiment in ("positive", "negative", "mixed")
    # Shown as JSON data, the footer last.
    assert cell.data("application/json")[-1] == r.model_dump(mode="json")


def test_dataclass_answer_is_a_dataclass_instance(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm --no-stream --schema Point -o p\nMake one up")
    assert cell.error is None, cell.text
    assert sent_format(srv) == TypeAdapter(Point).json_schema()
    p = shell.user_ns["p"]
    assert isinstance(p, Point) and isinstance(p.x, float) and isinstance(p.label, str)


def test_typeddict_answer_is_a_checked_dict(shell: InteractiveShell, srv: OllamaStandIn) -> None:
    # typing.TypedDict, which Pydantic itself refuses before Python 3.12.
    cell = run(shell, "%%llm --schema Person -o who\nMake one up")
    assert cell.error is None, cell.text
    fmt = sent_format(srv)
    assert fmt["type"] == "object" and fmt["required"] == ["name", "age"]
    assert {k: v["type"] for k, v in fmt["properties"].items()} == {
        "name": "string",
        "age": "integer",
    }
    who = shell.user_ns["who"]
    assert type(who) is dict and isinstance(who["name"], str) and isinstance(who["age"], int)
    srv.faults.off_schema_rate = 1.0
    cell = run(shell, "%%llm --schema Person -o who\nMake one up")
    assert isinstance(cell.error, SchemaError), cell.text
    assert "schema Person: name: Input should be a valid string (and 1 more)" in cell.text
    assert shell.user_ns["who"].errors[1].startswith("age: Input should be a valid integer")


def test_json_schema_dict_answer_is_a_dict_checked_with_jsonschema(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm --schema plain -o city\nA city")
    assert cell.error is None, cell.text
    assert sent_format(srv) == PLAIN
    city = shell.user_ns["city"]
    assert set(city) == {"city", "population"} and city["population"] >= 1


@pytest.mark.parametrize("schema", ["Review", "plain"])
def test_answer_off_the_schema_is_one_line_and_keeps_the_raw_answer(
    shell: InteractiveShell, srv: OllamaStandIn, schema: str
) -> None:
    srv.faults.off_schema_rate = 1.0
    cell = run(shell, f"%%llm --schema {schema} -o bad\nClassify it")
    err = cell.error
    assert isinstance(err, SchemaError) and isinstance(err, UserError)
    line = cell.text.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("SchemaError: %%llm: the answer does not match schema " + schema)
    stored = shell.user_ns["bad"]
    assert isinstance(stored, SchemaError)
    # The raw answer is what the model wrote, exactly as the stream showed it.
    assert stored.raw == cell.data("text/plain")[-2]
    assert json.loads(stored.raw) and stored.errors and stored.errors[0] in line
    # The line form too.
    cell = run(shell, f"never_set = %llm --schema {schema} -o bad_line Classify it")
    assert isinstance(cell.error, SchemaError) and "never_set" not in shell.user_ns
    assert json.loads(shell.user_ns["bad_line"].raw)


def test_schema_mistakes_are_caught_before_any_call(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    before = len(srv.requests_to("/api/generate"))
    shell.user_ns["broken"] = {"type": "no-such-type"}
    shell.user_ns["number"] = 3
    cases = {
        "%%llm --schema missing\nx": "--schema missing: no such variable",
        "%%llm --schema number\nx": "--schema number is a int; it must be a Pydantic model",
        "%%llm --schema broken\nx": "--schema broken is not a valid JSON schema",
        "%%llm --schema Review -f text\nx": "--schema and -f text do not mix",
    }
    for source, message in cases.items():
        cell = run(shell, source)
        assert isinstance(cell.error, UserError), (source, cell.text)
        assert message in cell.text and len(cell.text.strip().splitlines()) == 1, cell.text
    assert len(srv.requests_to("/api/generate")) == before


def test_schema_over_map_is_a_frame_with_a_column_per_field(
    shell: InteractiveShell, srv: OllamaStandIn
) -> None:
    srv.faults.off_schema_marker = "BROKEN"
    shell.user_ns["reviews"] = pd.DataFrame(
        {"text": ["Boils fast", "Lid BROKEN", "Too dim", "BROKEN again", "Comfy"]},
        index=pd.Index([11, 22, 33, 44, 55], name="id"),
    )
    cell = run(shell, "%%llm --map reviews --schema Review -o out\nClassify: {text}")
    assert cell.error is None, cell.text
    out = shell.user_ns["out"]
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["sentiment", "score", "summary"]
    assert out.index.equals(shell.user_ns["reviews"].index)
    bad = [22, 44]
    assert out.loc[bad].isna().all().all()
    assert out.drop(index=bad)["sentiment"].isin(["positive", "negative", "mixed"]).all()
    assert set(out.attrs["errors"]) == set(bad)
    assert all(isinstance(e, SchemaError) and e.raw for e in out.attrs["errors"].values())
    summary = re.search(r"--map: .*", cell.stdout).group(0)
    assert summary.startswith("--map: 5 rows, 3 ok, 2 failed in ")
    assert "failed rows: 22, 44;" in summary
    assert "first failure at row 22: SchemaError: the answer does not match schema" in summary


def test_map_summary_totals_tokens_and_speed(shell: InteractiveShell, srv: OllamaStandIn) -> None:
    prompts = ["one", "two words", "three more words", "and four words here"]
    shell.user_ns["items"] = prompts
    cell = run(shell, "%%llm --map items --max-tokens 5 -o got\nSay {item}")
    assert cell.error is None, cell.text
    summary = re.search(r"--map: .*", cell.stdout).group(0)
    # Ollama's counters, summed: the stand-in counts a prompt's words and emits 5 tokens.
    sent = sum(len(f"Say {p}".split()) for p in prompts)
    m = re.search(r"; (\d+) → (\d+) tokens, ([\d.,]+) tok/s", summary)
    assert m is not None, summary
    assert (int(m.group(1)), int(m.group(2))) == (sent, 5 * len(prompts))
    assert float(m.group(3).replace(",", "")) > 0
    assert "failed rows" not in summary
