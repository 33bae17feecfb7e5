"""%%llm --think: reasoning in its own collapsed section above the answer, kept on the value."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.llm_schema import SchemaError
from gleitzeit_jupyter.kernel.thinking import Answer, ThinkingDisplay, thinking_bundle
from gleitzeit_jupyter.testing.ollama import OllamaStandIn


@pytest.fixture
def thinker(shell: InteractiveShell) -> Iterator[OllamaStandIn]:
    caps = {"qwen3:latest": ["completion", "thinking"], "llama3.2:latest": ["completion"]}
    with OllamaStandIn(
        models=list(caps), capabilities=caps, tokens_per_s=300, default_tokens=10
    ) as srv:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{srv.url}']")
        yield srv


def details(outputs: list) -> list[str]:
    return [
        o.data["text/markdown"]
        for o in outputs
        if o.data.get("text/markdown", "").startswith("<details>")
    ]


def test_thinking_streams_into_a_collapsed_section_above_the_answer(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm -m qwen3 --think -o answer\nWhy is the sky blue")
    assert cell.error is None, cell.text
    body = thinker.requests_to("/api/generate")[-1].body
    assert body["think"] is True
    answer = shell.user_ns["answer"]
    assert isinstance(answer, Answer) and isinstance(answer, str)
    thinking = answer.thinking
    assert thinking and len(thinking.split()) == 10 and thinking not in answer
    # The section comes first, its final state is collapsed and titled "thinking".
    sections = details(cell.outputs)
    assert sections[-1] == thinking_bundle(thinking)["text/markdown"]
    assert sections[-1].startswith("<details>\n<summary>thinking</summary>")
    first_section = next(i for i, o in enumerate(cell.outputs) if "<details>" in str(o.data))
    first_answer = next(i for i, o in enumerate(cell.outputs) if answer[:20] in str(o.data))
    assert first_section < first_answer
    # The answer's own output holds the answer only.
    answers = [md for md in cell.data("text/markdown") if not md.startswith("<details>")]
    assert answers[-1] == answer
    assert cell.data("text/plain")[-1].startswith("qwen3 · ")


def test_think_levels_and_no_stream(shell: InteractiveShell, thinker: OllamaStandIn) -> None:
    cell = run(shell, "%%llm -m qwen3 --think high --no-stream -o a\nPlan a trip")
    assert cell.error is None, cell.text
    assert thinker.requests_to("/api/generate")[-1].body["think"] == "high"
    a = shell.user_ns["a"]
    assert details(cell.outputs) == [thinking_bundle(a.thinking)["text/markdown"]]
    assert cell.outputs[1].data["text/markdown"] == a
    cell = run(shell, "%%llm -m qwen3 --think extreme\nx")
    assert "argument --think: invalid choice: 'extreme'" in cell.text


def test_line_form_returns_the_answer_with_its_thinking(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    cell = run(shell, "x = %llm -m qwen3 --think Say hi\ny = %llm -m qwen3 --think low Say hi")
    assert cell.error is None, cell.text
    x, y = shell.user_ns["x"], shell.user_ns["y"]
    bodies = [r.body for r in thinker.requests_to("/api/generate")[-2:]]
    assert [b["prompt"] for b in bodies] == ["Say hi", "Say hi"]
    assert [b["think"] for b in bodies] == [True, "low"]
    assert x.thinking and y.thinking
    assert pickle.loads(pickle.dumps(x)).thinking == x.thinking


def test_json_answers_keep_their_type_with_thinking(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm -m qwen3 --think -f json -o obj\nAn object")
    assert cell.error is None, cell.text
    assert type(shell.user_ns["obj"]) is dict
    assert details(cell.outputs), "the reasoning is still shown"


def test_a_model_that_cannot_think_is_a_clear_error(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    cell = run(shell, "%%llm -m llama3.2 --think\nWhy")
    assert isinstance(cell.error, UserError)
    assert "lacks thinking" in cell.text and len(cell.text.strip().splitlines()) == 1


def test_terminal_shows_thinking_dimmed_before_the_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    view = ThinkingDisplay(terminal=True)
    view.append("weighing")
    view.append(" options")
    view.finish()
    view.append("ignored after finish")
    out = capsys.readouterr().out
    assert out == "\x1b[2mweighing\x1b[0m\x1b[2m options\x1b[0m\n"
    assert view.text == "weighing options"


def test_thinking_text_is_shown_as_text_not_markup() -> None:
    md = thinking_bundle("<script>x</script> & </details>")["text/markdown"]
    assert "&lt;script&gt;x&lt;/script&gt; &amp; &lt;/details&gt;" in md
    assert md.count("</details>") == 1


def test_a_failure_after_the_reasoning_leaves_the_section_complete(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    thinker.faults.stream_error_after = 2
    try:
        cell = run(shell, "%%llm -m qwen3 --think\nWhy")
    finally:
        thinker.faults.stream_error_after = None
    assert cell.error is not None and len(cell.text.strip().splitlines()) == 1
    sections = details(cell.outputs)
    assert sections and sections[-1].startswith("<details>\n<summary>thinking</summary>")


def test_thinking_markdown_is_not_rendered_either() -> None:
    # Reasoning is the model's raw text: a remote image in it would be fetched on display
    # (a way out for notebook data), emphasis and headings would restyle it.
    from markdown_it import MarkdownIt

    text = "First\n\n![x](http://example.invalid/leak?q=secret)\n\n# Plan\n**bold**  \n\n   "
    html = MarkdownIt("commonmark").render(thinking_bundle(text)["text/markdown"])
    assert "<img" not in html and "<h1>" not in html and "<strong>" not in html
    assert "![x](http://example.invalid/leak?q=secret)" in html and "**bold**" in html
    assert html.count("<details>") == 1 and html.rstrip().endswith("</details>")


def test_a_chat_keeps_the_reasoning_with_the_answer_in_its_history(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    # As Ollama's own CLI does: the assistant turn goes back with its thinking, and the
    # model's template decides whether to show it to the model again.
    cell = run(shell, "%%llm -m qwen3 --think --chat trip -o first\nPlan a trip")
    assert cell.error is None, cell.text
    cell = run(shell, "%%llm -m qwen3 --think --chat trip\nShorter, please")
    assert cell.error is None, cell.text
    first = shell.user_ns["first"]
    sent = thinker.requests_to("/api/chat")[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1] == {"role": "assistant", "content": str(first), "thinking": first.thinking}
    cell = run(shell, "%%llm -m qwen3 --chat plain\nNo thinking here")
    cell = run(shell, "%%llm -m qwen3 --chat plain\nAgain")
    assert "thinking" not in thinker.requests_to("/api/chat")[-1].body["messages"][1]


@pytest.mark.parametrize("stream", ["", "--no-stream "])
def test_an_answer_off_the_schema_keeps_its_reasoning_on_the_error(
    shell: InteractiveShell, thinker: OllamaStandIn, stream: str
) -> None:
    shell.user_ns["plain"] = {"type": "object", "properties": {"n": {"type": "integer"}}}
    thinker.faults.off_schema_rate = 1.0
    try:
        cell = run(shell, f"%%llm -m qwen3 --think {stream}--schema plain -o bad\nA number")
    finally:
        thinker.faults.off_schema_rate = 0.0
    err = shell.user_ns["bad"]
    assert isinstance(err, SchemaError) and err.raw and cell.error is not None
    assert err.thinking and len(err.thinking.split()) == 10
    assert cell.error.thinking == err.thinking


def test_map_rows_off_the_schema_keep_their_reasoning(
    shell: InteractiveShell, thinker: OllamaStandIn
) -> None:
    shell.user_ns.update(
        plain={"type": "object", "properties": {"n": {"type": "integer"}}}, asks=["a", "b"]
    )
    thinker.faults.off_schema_rate = 1.0
    try:
        cell = run(shell, "%%llm -m qwen3 --think --map asks --schema plain -o out\nNumber {item}")
    finally:
        thinker.faults.off_schema_rate = 0.0
    assert cell.error is None, cell.text
    errors = shell.user_ns["out"].attrs["errors"]
    assert set(errors) == {0, 1} and all(e.thinking and e.raw for e in errors.values())
