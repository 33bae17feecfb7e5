"""The stand-in keeps a ``format`` schema as Ollama's constrained decoding does (nested models,
optional fields, enums, bounds), and breaks it on demand through the fault knobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import httpx
import ollama
import pytest
from pydantic import BaseModel, Field, ValidationError

from gleitzeit_jupyter.testing.ollama import OllamaStandIn


class Address(BaseModel):
    city: str
    zip_code: int = Field(ge=1000, le=99999)


class Person(BaseModel):
    name: str
    mood: Literal["calm", "busy"]
    age: int = Field(gt=17)
    height: float | None = None
    home: Address
    tags: list[str] = Field(min_length=2)


@pytest.fixture
def srv() -> Iterator[OllamaStandIn]:
    with OllamaStandIn(models=["llama3.2"]) as s:
        yield s


@pytest.fixture
def client(srv: OllamaStandIn) -> Iterator[ollama.Client]:
    c = ollama.Client(host=srv.url, timeout=10)
    yield c
    c._client.close()


def test_answers_keep_a_pydantic_schema(client: ollama.Client) -> None:
    for prompt in ("one", "two words", "a few more words here"):
        r = client.generate(model="llama3.2", prompt=prompt, format=Person.model_json_schema())
        person = Person.model_validate_json(r.response)
        assert person.home.zip_code >= 1000 and len(person.tags) >= 2
        chat = client.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": prompt}],
            format=Person.model_json_schema(),
            stream=False,
        )
        Person.model_validate_json(chat.message.content)


def test_off_schema_knobs_break_the_schema(srv: OllamaStandIn, client: ollama.Client) -> None:
    schema = Person.model_json_schema()
    # Over the control endpoint, as a stand-in in another process is driven.
    httpx.post(f"{srv.url}/_standin/control", json={"faults": {"off_schema_marker": "BAD"}})
    good = client.generate(model="llama3.2", prompt="fine", format=schema)
    Person.model_validate_json(good.response)
    bad = client.generate(model="llama3.2", prompt="a BAD one", format=schema)
    with pytest.raises(ValidationError):
        Person.model_validate_json(bad.response)
    # "json" (no schema) is never broken: there is no schema to break.
    assert client.generate(model="llama3.2", prompt="BAD", format="json").response.startswith("{")
    srv.faults.update(off_schema_marker=None, off_schema_rate=1.0)
    with pytest.raises(ValidationError):
        Person.model_validate_json(client.generate("llama3.2", "fine", format=schema).response)
