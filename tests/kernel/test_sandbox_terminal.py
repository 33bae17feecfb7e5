"""Sandbox text on a real terminal IPython: colours stay, other control sequences do not.

An OSC 52 sequence would write the terminal's clipboard; others retitle the window or move
the cursor to overwrite what was printed. The same text in a notebook keeps its colours.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gleitzeit_jupyter.kernel.render import terminal_safe

pytestmark = [pytest.mark.docker]

HOSTILE = (
    "import sys\n"
    "print('\\x1b[31mred\\x1b[0m')\n"
    "print('\\x1b]52;c;cm0gLXJmIH4=\\x07clip')\n"  # OSC 52: set the clipboard
    "print('\\x1b]0;pwned\\x07title')\n"
    "print('safe\\rfake', end='\\x1b[2K\\x1b[1A\\n')\n"
    "print('\\x9b2Jc1', file=sys.stderr)\n"
    "raise ValueError('\\x1b]52;c;eA==\\x07in the traceback')\n"
)


def test_terminal_safe_keeps_colours_and_shows_the_rest_as_text() -> None:
    out = terminal_safe("\x1b[1;31mred\x1b[0m \x1b]52;c;aGk=\x07 a\rb \x9b2J\ttab\n")
    assert out == "\x1b[1;31mred\x1b[0m \\x1b]52;c;aGk=\\x07 a\nb \\x9b2J\ttab\n"


def test_terminal_ipython_receives_no_control_sequence_but_colour(tmp_path: Path) -> None:
    script = tmp_path / "cell.py"
    script.write_text(
        "ip = get_ipython()\n"
        "ip.run_line_magic('load_ext', 'gleitzeit_jupyter')\n"
        f"ip.run_cell_magic('sandbox', '', {HOSTILE!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--colors=NoColor", "--no-banner", str(script)],
        capture_output=True,
        timeout=180,
    )
    both = done.stdout + done.stderr
    assert b"in the traceback" in both, both[-2000:]  # the whole cell ran and was shown
    assert b"\x1b[31mred\x1b[0m" in done.stdout  # colour kept
    for bad in (b"\x1b]", b"\x1b[2K", b"\x1b[1A", b"\x9b", "\x9b".encode(), b"\r"):
        assert bad not in both, (bad, both[-2000:])
    assert b"\\x1b]52;c;cm0gLXJmIH4=\\x07clip" in done.stdout  # shown, harmless, as text
