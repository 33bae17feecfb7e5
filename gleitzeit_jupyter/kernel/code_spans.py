"""Where a prompt holds code: fenced code blocks and inline code spans, by CommonMark rules.

Interpolation must leave pasted code exactly as written (an f-string's ``{name}`` is the
code's business, and substituting it would send notebook values to the server), so it needs
the character ranges of that code. Block structure (fences, also inside lists and block
quotes, unclosed ones running to the end of their container) comes from markdown-it-py;
code spans are found within each paragraph's lines with CommonMark's backtick-run rule.
"""

from __future__ import annotations

import re
from functools import cache

from markdown_it import MarkdownIt

__all__ = ["code_ranges"]

# markdown-it counts "\r\n", "\r" and "\n" each as one line break (its normalize rule).
_LINE_BREAK = re.compile(r"\r\n?|\n")
_BACKTICKS = re.compile(r"`+")


@cache
def _block_parser() -> MarkdownIt:
    # Only block structure is needed; the inline pass is the slow part and is skipped.
    md = MarkdownIt("commonmark")
    md.disable("inline")
    return md


def _line_starts(text: str) -> list[int]:
    return [0, *(m.end() for m in _LINE_BREAK.finditer(text)), len(text)]


def _spans_in(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Code spans between ``start`` and ``end``: a run of N backticks up to the next run of
    exactly N; a run without such a partner is literal text. A backslash escapes a backtick
    only outside a span."""
    found: list[tuple[int, int]] = []
    pos = start
    while True:
        opener = _BACKTICKS.search(text, pos, end)
        if opener is None:
            return found
        backslashes = 0
        i = opener.start() - 1
        while i >= start and text[i] == "\\":
            backslashes += 1
            i -= 1
        open_at = opener.start() + (backslashes % 2)
        width = opener.end() - open_at
        if width == 0:
            pos = opener.end()
            continue
        closer = _BACKTICKS.search(text, opener.end(), end)
        while closer is not None and closer.end() - closer.start() != width:
            closer = _BACKTICKS.search(text, closer.end(), end)
        if closer is None:
            pos = opener.end()  # literal backticks; later runs may still open a span
            continue
        found.append((open_at, closer.end()))
        pos = closer.end()


def code_ranges(text: str) -> list[tuple[int, int]]:
    """Sorted, disjoint ``(start, end)`` character ranges of ``text`` that are code."""
    if "`" not in text and "~~~" not in text:
        return []  # neither fences nor spans possible: skip the parse
    starts = _line_starts(text)
    last = len(starts) - 1

    def offset(line: int) -> int:
        return starts[min(line, last)]

    ranges: list[tuple[int, int]] = []
    for token in _block_parser().parse(text):
        if token.map is None:
            continue
        begin, stop = offset(token.map[0]), offset(token.map[1])
        if token.type == "fence":
            ranges.append((begin, stop))
        elif token.type == "inline":
            ranges.extend(_spans_in(text, begin, stop))
    ranges.sort()
    return ranges
