"""%llm --map: the line form returns the batch's result, so a frame and its batch fit one cell."""

from __future__ import annotations

import pandas as pd
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.testing.ollama import OllamaStandIn


def test_line_form_returns_a_series_aligned_with_the_frame(
    shell: InteractiveShell, standin: OllamaStandIn
) -> None:
    cell = run(
        shell,
        "import pandas as pd\n"
        'reviews = pd.DataFrame({"text": ["good", "bad", "meh"]}, index=["a", "b", "c"])\n'
        'reviews["sentiment"] = %llm --map reviews --max-tokens 3 One word for: {text}\n',
    )
    assert cell.error is None, cell.text
    reviews = shell.user_ns["reviews"]
    assert list(reviews.index) == ["a", "b", "c"]
    assert all(isinstance(v, str) and len(v.split()) == 3 for v in reviews["sentiment"])
    assert "--map: 3 rows, 3 ok, 0 failed" in cell.stdout
    prompts = {r.body["prompt"] for r in standin.requests_to("/api/generate")}
    assert {"One word for: good", "One word for: bad", "One word for: meh"} <= prompts


def test_line_form_with_output_variable_and_schema(shell: InteractiveShell) -> None:
    cell = run(
        shell,
        "from typing import TypedDict\n"
        "class Tag(TypedDict):\n"
        "    label: str\n"
        "items = ['tea', 'coffee']\n"
        "frame = %llm --map items --schema Tag -o tags Tag {item}\n",
    )
    assert cell.error is None, cell.text
    frame, tags = shell.user_ns["frame"], shell.user_ns["tags"]
    assert frame is tags
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["label"]
    assert list(frame.index) == [0, 1]


def test_line_form_needs_a_template(shell: InteractiveShell) -> None:
    shell.user_ns["items"] = ["x"]
    cell = run(shell, "%llm --map items")
    assert "UsageError" in cell.text and "nothing to ask" in cell.text
