"""docs/magics.md documents exactly the options the magics parse (what ``%%llm?`` prints)."""

from __future__ import annotations

import re
from pathlib import Path

from gleitzeit_jupyter.kernel.magics import GleitzeitMagics

DOC = Path(__file__).resolve().parent.parent / "docs" / "magics.md"
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def _sections() -> dict[str, str]:
    """The text of the sections about %%llm, %%sandbox and %gleitzeit."""
    text = DOC.read_text()
    heads = [(m.start(), m.group(1)) for m in re.finditer(r"^## `%+(\w+)`", text, re.M)]
    out: dict[str, str] = {}
    for k, (start, name) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else text.find("\n## ", start + 1)
        out[name] = text[start:end]
    return out


def _options(name: str) -> list[tuple[str, ...]]:
    parser = getattr(GleitzeitMagics, name).parser
    return [tuple(a.option_strings) for a in parser._actions if a.option_strings]


def test_every_parsed_option_is_documented_in_its_section() -> None:
    sections = _sections()
    assert set(sections) >= {"llm", "sandbox", "gleitzeit"}, list(sections)
    for name in ("llm", "sandbox", "gleitzeit"):
        written = set(OPTION.findall(sections[name]))
        for forms in _options(name):
            if "--help" in forms:
                continue
            assert written & set(forms), f"docs/magics.md does not document {name} {forms}"


def test_every_documented_option_is_parsed() -> None:
    known = {form for name in ("llm", "sandbox", "gleitzeit") for f in _options(name) for form in f}
    written = set(OPTION.findall(DOC.read_text()))
    assert written <= known, f"docs/magics.md names options no magic has: {written - known}"


def test_every_gleitzeit_command_is_documented_with_an_example() -> None:
    section = _sections()["gleitzeit"]
    help_text = GleitzeitMagics.gleitzeit.parser.format_help()
    words = r"\b(status|metrics|add|remove|drain|enable|reset|strategy|save|load)\b"
    commands = set(re.findall(words, help_text))
    assert len(commands) == 10, commands
    for command in commands:
        assert re.search(rf"%gleitzeit {command}\b", section), command


def test_every_option_has_an_example() -> None:
    """In a python block, or in an inline `%%llm ...` / `%sandbox ...` line."""
    text = DOC.read_text()
    blocks = re.findall(r"^\s*```python\n(.*?)^\s*```", text, re.S | re.M)
    inline = re.findall(r"`(%{1,2}(?:llm|sandbox|gleitzeit)\b[^`]*)`", text)
    examples = "\n".join(blocks + inline)
    missing = [
        (name, forms)
        for name in ("llm", "sandbox", "gleitzeit")
        for forms in _options(name)
        if "--help" not in forms
        and not any(re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", examples) for f in forms)
    ]
    assert not missing, missing
