"""Prompt interpolation: plain references substituted, any other brace text untouched."""

from __future__ import annotations

import pytest

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.interpolate import InterpolationError, interpolate, references


class Point:
    def __init__(self) -> None:
        self.x = 3
        self.inner = self


NS = {"name": "Ada", "n": 42, "p": Point(), "In": ["", "a = 1", "b = 2"], "Out": {2: "two"}}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello {name}", "Hello Ada"),
        ("{n}{n}", "4242"),
        ("x is {p.x}, again {p.inner.x}", "x is 3, again 3"),
        ("cell: {In[1]} / out: {Out[2]}", "cell: a = 1 / out: two"),
        ("last input {In[-1]}", "last input b = 2"),
        # Other brace text is left exactly as written.
        ('{"a": 1, "b": [1, 2]}', '{"a": 1, "b": [1, 2]}'),
        ('{"a": {"b": 1}}', '{"a": {"b": 1}}'),
        ("def f():\n    return {x + 1 for x in y}", "def f():\n    return {x + 1 for x in y}"),
        ("d = {1: 2}", "d = {1: 2}"),
        ("{ name }", "{ name }"),
        ("{True} {None}", "{True} {None}"),
        ("{}", "{}"),
        ("unbalanced { and } braces", "unbalanced { and } braces"),
        # References inside other brace text are still references.
        ('{"who": "{name}"}', '{"who": "Ada"}'),
        # {{ escapes, and the }} that closes it becomes one brace.
        ("{{name}}", "{name}"),
        ("literal {{ brace", "literal { brace"),
        ('{{"a": {"b": 1}}}', '{"a": {"b": 1}}'),
        ("f'{{x}}' is {name}", "f'{x}' is Ada"),
    ],
)
def test_interpolate(template: str, expected: str) -> None:
    assert interpolate(template, NS) == expected


def test_unknown_name_is_an_error_naming_it() -> None:
    with pytest.raises(InterpolationError, match="unknown name 'missing'") as info:
        interpolate("Hi {missing}, I am {name}", NS)
    assert isinstance(info.value, UserError)
    assert "{{missing}}" in str(info.value)


def test_missing_attribute_and_history_are_errors() -> None:
    with pytest.raises(InterpolationError, match=r"p\.inner .*no attribute 'nope'"):
        interpolate("{p.inner.nope}", NS)
    with pytest.raises(InterpolationError, match=r"Out\[7\]"):
        interpolate("{Out[7]}", NS)
    with pytest.raises(InterpolationError, match=r"In\[9\]"):
        interpolate("{In[9]}", NS)


def test_first_namespace_wins() -> None:
    assert interpolate("{name}", {"name": "row"}, NS) == "row"
    assert interpolate("{n}", {"name": "row"}, NS) == "42"


def test_references() -> None:
    assert references('{a} {"x": 1} {b.c} {In[2]} {{d}}') == ["a", "b.c", "In[2]", "d"]


def test_code_is_left_as_written() -> None:
    text = "{name} `{n}` and\n```\n{missing}\n```\n{n}"
    assert interpolate(text, NS) == "Ada `{n}` and\n```\n{missing}\n```\n42"


def test_references_outside_code_only() -> None:
    assert references("{a} `{b}`\n~~~\n{c}\n~~~\n{d}") == ["a", "d"]


def test_err_needs_an_error_log() -> None:
    with pytest.raises(InterpolationError, match=r"\{Err\[2\]\}"):
        interpolate("{Err[2]}", NS)
