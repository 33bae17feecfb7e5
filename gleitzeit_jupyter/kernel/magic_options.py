"""Reading a magic's line: options first (IPython's magic_arguments), then, in the line
forms, the prompt or code verbatim."""

from __future__ import annotations

import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring

__all__ = ["names", "parse", "split_line_options"]

_OPTION_LIKE = re.compile(r"^--?[A-Za-z][\w-]*$")
_TOKEN = re.compile(r"\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|\S+)")


def split_line_options(line: str, parser: Any) -> tuple[str, str]:
    """Split ``%llm -m x -t 0.2 what's up?`` into the option part and the raw prompt.

    The prompt is taken verbatim (quotes and apostrophes kept), which shlex-style parsing of
    the whole line would mangle. Options end at the first word that is not a known option
    (or after ``--``).
    """
    takes_value: dict[str, bool] = {}
    optional: dict[str, Any] = {}  # nargs="?" options: the values they may take
    for action in parser._actions:
        for opt in action.option_strings:
            takes_value[opt] = action.nargs != 0
            if action.nargs == "?":
                optional[opt] = action.choices or ()
    pos = 0
    while True:
        m = _TOKEN.match(line, pos)
        if m is None:
            return line[:pos].strip(), ""
        tok = m.group(1)
        if tok == "--":
            return line[: m.start(1)].strip(), line[m.end() :].strip()
        name = tok.split("=", 1)[0]
        if _OPTION_LIKE.match(name) and name not in takes_value:
            # An unknown option is a typo to report, not the first word of the prompt.
            return line[: m.end()].strip(), line[m.end() :].strip()
        if not tok.startswith("-") or name not in takes_value:
            return line[: m.start(1)].strip(), line[m.start(1) :].strip()
        pos = m.end()
        if takes_value[name] and "=" not in tok:
            v = _TOKEN.match(line, pos)
            if v is None:
                return line.strip(), ""
            if name in optional and v.group(1) not in optional[name]:
                continue  # --think What is...: the prompt, not the option's value
            pos = v.end()


def _unquote(value: Any) -> Any:
    # IPython splits magic lines with non-POSIX shlex, which keeps the quotes: -s 'Be terse.'
    # arrives as "'Be terse.'".
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace("\\" + value[0], value[0]) if value[0] == '"' else inner
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def parse(magic: Any, line: str) -> Any:
    """magic_arguments parsing, with quotes removed from string values."""
    args = parse_argstring(magic, line)
    for key, value in vars(args).items():
        setattr(args, key, _unquote(value))
    return args


def names(text: str | None) -> list[str]:
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if not n.isidentifier():
            raise UsageError(f"{n!r} is not a variable name (use --in a,b / --out c,d)")
    return names
