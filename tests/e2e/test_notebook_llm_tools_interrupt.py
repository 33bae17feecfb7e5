"""%%llm --tools interrupted in a real kernel (nbclient): the stop button during the model's
sandbox run ends the cell in one line, gives the session's container back, and leaves the
chat and the pool usable (the Ollama stand-in, the real docker engine)."""

from __future__ import annotations

import docker
from nb_harness import Notebook

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

HELD = (
    "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
    "rows = get_runtime().sandbox().status()['instances']\n"
    "print(sorted(r['session'] for r in rows if (r.get('session') or '').startswith('llm-')))"
)


async def test_stop_button_during_the_models_code_frees_the_sandbox(tmp_path) -> None:
    docker.from_env().ping()  # no engine: fail here, loudly
    srv = OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=200, default_tokens=8).start()
    nb = Notebook(tmp_path)
    await nb.start()
    try:
        cell = await nb.run(
            "%load_ext gleitzeit_jupyter\n"
            f"%config Gleitzeit.ollama_hosts = ['{srv.url}']\n"
            "%config Gleitzeit.sandbox_timeout = 300.0\n"
            "%sandbox print('warm')"
        )
        assert cell.ok, cell
        cell = await nb.run("%%llm --tools sandbox --chat c\nRun:\n```python\nx = 1\n```")
        assert cell.ok, cell

        cell, _ = await nb.run_and_interrupt(
            "%%llm --tools sandbox --chat c\nRun:\n```python\nimport time\ntime.sleep(120)\n```",
            after=4.0,
        )
        assert [e["ename"] for e in cell.errors] == ["CellInterrupted"], cell
        assert cell.error_text().startswith("Interrupted: %%llm stopped"), cell.error_text()

        cell = await nb.run(HELD)
        assert cell.stream().strip() == "[]", cell  # no container held by a tool session
        cell = await nb.run("%%sandbox\nprint('still here')")
        assert cell.stream() == "still here\n", cell
        cell = await nb.run("%%llm --chat c\nAnd now?")
        assert cell.ok, cell
        roles = [m["role"] for m in srv.requests_to("/api/chat")[-1].body["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant", "user"]  # the first turn only
    finally:
        await nb.stop()
        srv.stop()
