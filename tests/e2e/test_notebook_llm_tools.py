"""%%llm --tools end to end: a real kernel (nbclient), the Ollama stand-in and, for the code
interpreter, the real docker engine."""

from __future__ import annotations

import docker
from nb_harness import Notebook

from gleitzeit_jupyter.testing.ollama import OllamaStandIn


async def test_tool_loops_in_a_notebook(tmp_path) -> None:
    docker.from_env().ping()  # no engine: fail here, loudly
    srv = OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=200, default_tokens=8).start()
    nb = Notebook(tmp_path)
    await nb.start()
    try:
        cell = await nb.run(
            "%load_ext gleitzeit_jupyter\n"
            f"%config Gleitzeit.ollama_hosts = ['{srv.url}']\n"
            "import os\n"
            "def word_count(text: str) -> int:\n"
            '    """Count the words in a text.\n\n    Args:\n        text: the text\n    """\n'
            "    return len(text.split())\n"
        )
        assert cell.ok, cell

        # A kernel function as a tool: the call is shown (updated in place), then the answer.
        cell = await nb.run("%%llm --tools word_count -o ans\nHow many words are in my text?")
        assert cell.ok, cell
        (line,) = [t for t in cell.data("text/plain") if t.startswith("tool ")]
        assert line.startswith("tool word_count(text='") and " ⟶ " in line
        count = line.rsplit(" ⟶ ", 1)[1]
        assert count.isdigit()
        html = [h for h in cell.data("text/html") if "gz-tool-call" in h]
        assert len(html) == 1 and "<script" not in html[0]
        (answer,) = cell.data("text/markdown")
        assert answer.startswith(f"[word_count said: {count}]")
        check = await nb.run(f"print(ans == {answer!r})")
        assert check.stream().strip() == "True", check
        assert cell.data("text/plain")[-1].startswith("llama3.2 · ")  # the footer

        # The code interpreter: the model's code runs in the sandbox, shown as %%sandbox shows
        # it, and the model reads the output; the kernel never runs it.
        cell = await nb.run(
            "%%llm --tools sandbox -o ans2\n"
            "Run this with python:\n"
            "```python\nimport os\nsecret_of_the_model = 6 * 7\n"
            "print('pid', os.getpid())\nsecret_of_the_model\n```"
        )
        assert cell.ok, cell
        pid = cell.stream().split()
        assert pid[0] == "pid" and pid[1].isdigit()
        code_shown = [h for h in cell.data("text/html") if "python ⟶ sandbox" in h]
        assert len(code_shown) == 1 and "secret_of_the_model = 6 * 7" in code_shown[0]
        assert "42" in cell.data("text/plain")
        assert any(t.startswith("sandbox · ") for t in cell.data("text/plain"))
        tool_msg = srv.requests_to("/api/chat")[-1].body["messages"][-1]
        assert tool_msg == {
            "role": "tool",
            "content": f"stdout:\npid {pid[1]}\nresult:\n42",
            "tool_name": "python",
        }
        check = await nb.run(
            f"print('secret_of_the_model' in globals(), os.getpid() != int({pid[1]!r}),"
            " 'python said: stdout: pid' in ' '.join(ans2.split()))"
        )
        assert check.stream().strip() == "False True True", check
        nb.save("llm_tools.ipynb")
    finally:
        await nb.stop()
        srv.stop()
