"""%%llm in a terminal: the model's text (answer and reasoning) is untrusted, so no control
sequence in it reaches the terminal (``ESC ]52`` would set the clipboard, others retitle the
window or move the cursor to overwrite what was printed)."""

from __future__ import annotations

import pytest

from gleitzeit_jupyter.kernel.render import StreamingDisplay
from gleitzeit_jupyter.kernel.thinking import ThinkingDisplay

HOSTILE = "ok \x1b]52;c;ZXZpbA==\x07 \x1b[2J\x1b[H\r gone \x9b31m"


@pytest.mark.parametrize("make", [StreamingDisplay, ThinkingDisplay])
def test_control_sequences_from_the_model_are_shown_as_text(
    make: type, capsys: pytest.CaptureFixture[str]
) -> None:
    view = make(terminal=True)
    view.append(HOSTILE)
    view.finish()
    out = capsys.readouterr().out
    assert "\x1b]" not in out and "\x07" not in out and "\x1b[2J" not in out
    assert "\x9b" not in out and "\r" not in out
    assert "\\x1b]52;c;ZXZpbA==\\x07" in out
    assert view.text == HOSTILE  # kept as the model wrote it
