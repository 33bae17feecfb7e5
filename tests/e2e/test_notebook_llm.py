"""%%llm end to end: a real kernel (nbclient) against the Ollama stand-in."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from nb_harness import Notebook

from gleitzeit_jupyter.testing.ollama import OllamaStandIn


async def test_llm_notebook(tmp_path: Path) -> None:
    srv = OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=100, default_tokens=30).start()
    nb = Notebook(tmp_path)
    await nb.start()
    try:
        load = await nb.run(
            "%load_ext gleitzeit_jupyter\n"
            f"%config Gleitzeit.ollama_hosts = ['{srv.url}']\n"
            "import threading, os\n"
            "kernel_pid = os.getpid()"
        )
        assert load.ok, load
        # The sidebar's comm target is registered by the extension in a kernel.
        cell = await nb.run(
            "from gleitzeit_jupyter.kernel import comm\nprint(comm.get_bridge() is not None)"
        )
        assert cell.stream().strip() == "True", cell

        # Streaming into one display, final Markdown, footer, -o.
        cell = await nb.run("%%llm -o answer\nWrite a haiku about {kernel_pid}")
        assert cell.ok, cell
        md = cell.data("text/markdown")
        assert len(md) == 1 and md[0].strip(), cell  # updates landed in place: one output
        answer = await nb.run("print(repr(answer))")
        assert answer.stream().strip() == repr(md[0])
        footer = cell.data("text/plain")[-1]
        assert footer.startswith("llama3.2 · ") and footer.endswith("tok/s")
        prompt = srv.requests_to("/api/generate")[-1].body["prompt"]
        assert prompt.startswith("Write a haiku about ") and prompt.split()[-1].isdigit()

        # The line form returns the text.
        cell = await nb.run("x = %llm Say hi\nprint(type(x).__name__, len(x) > 0)")
        assert cell.stream().strip() == "str True", cell

        # --map over a 200-row DataFrame: aligned Series, tqdm widget bar, summary line.
        cell = await nb.run(
            "import pandas as pd\n"
            "df = pd.DataFrame({'name': [f'item {i}' for i in range(200)]},"
            " index=range(1000, 1200))"
        )
        assert cell.ok, cell
        cell = await nb.run("%%llm --map df --concurrency 16 -o out --max-tokens 3\nName {name}")
        assert cell.ok, cell
        assert "--map: 200 rows, 200 ok, 0 failed" in cell.stream(), cell
        assert cell.data("application/vnd.jupyter.widget-view+json"), "no progress bar widget"
        check = await nb.run(
            "print(out.index.equals(df.index), out.map(type).eq(str).all(), len(out))"
        )
        assert check.stream().strip() == "True True 200", check

        # %gleitzeit metrics: a DataFrame with the pool's numbers, exported to CSV.
        cell = await nb.run("%gleitzeit metrics --export metrics.csv")
        assert cell.ok, cell
        metrics = pd.read_csv(tmp_path / "metrics.csv")
        assert metrics.loc[0, "provider"] == "ollama" and metrics["requests"].max() >= 202
        cell = await nb.run("%gleitzeit metrics")
        assert cell.data("text/html"), cell
        # In a kernel, status is the live widget panel.
        cell = await nb.run("%gleitzeit status")
        assert cell.ok and cell.data("application/vnd.jupyter.widget-view+json"), cell

        # Interrupt a long %%llm: one line, stream closed, kernel still usable.
        srv.tokens_per_s = 2
        disconnects = len(srv.disconnects)
        cell, took = await nb.run_and_interrupt("%%llm\nTell me a long story", after=1.5)
        srv.tokens_per_s = 100
        assert took < 3, took
        assert [e["ename"] for e in cell.errors] == ["CellInterrupted"], cell
        assert cell.error_text() == (
            "Interrupted: %%llm stopped; the request to the model was cancelled"
        )
        assert len(srv.disconnects) > disconnects
        cell = await nb.run("%%llm -o again\nStill there?")
        assert cell.ok, cell
        cell = await nb.run("print(len(again) > 0, threading.active_count() < 20)")
        assert cell.stream().strip() == "True True", cell

        # Unload: no runtime thread left; reload works.
        cell = await nb.run(
            "%unload_ext gleitzeit_jupyter\n"
            "print([t.name for t in threading.enumerate() if t.name == 'gleitzeit-runtime'])"
        )
        assert cell.stream().strip() == "[]", cell
        cell = await nb.run("print(comm.get_bridge())")
        assert cell.stream().strip() == "None", cell
        cell = await nb.run("%load_ext gleitzeit_jupyter\ny = %llm back again\nprint(bool(y))")
        assert cell.stream().strip() == "True", cell
        nb.save("llm.ipynb")
    finally:
        await nb.stop()
        srv.stop()


async def _execute_with_cell_id(nb: Notebook, source: str, cell_id: str) -> dict:
    """An execute_request as JupyterLab sends it (metadata.cellId); returns the reply."""
    kc = nb.client.kc
    msg = kc.session.msg(
        "execute_request",
        {
            "code": source,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        metadata={"cellId": cell_id},
    )
    kc.shell_channel.send(msg)
    while True:
        reply = await kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply


async def test_code_answer_offered_once_per_cell(tmp_path: Path) -> None:
    srv = OllamaStandIn(models=["llama3.2:latest"]).start()
    nb = Notebook(tmp_path)
    await nb.start()
    try:
        cell = await nb.run(
            f"%load_ext gleitzeit_jupyter\n%config Gleitzeit.ollama_hosts = ['{srv.url}']"
        )
        assert cell.ok, cell
        src = "%%llm -f code -o code\nWrite a function"

        def offers(reply: dict) -> list[dict]:
            assert reply["content"]["status"] == "ok", reply["content"]
            return [p for p in reply["content"]["payload"] if p["source"] == "set_next_input"]

        first = offers(await _execute_with_cell_id(nb, src, "cell-a"))
        assert len(first) == 1 and first[0]["replace"] is False
        check = await nb.run("print(repr(code))")
        assert check.stream().strip() == repr(first[0]["text"])
        # Rerunning the same cell (same cellId) must not add one more cell each time...
        assert offers(await _execute_with_cell_id(nb, src, "cell-a")) == []
        assert offers(await _execute_with_cell_id(nb, src + " again", "cell-a")) == []
        # ...while another cell with the same text gets its own offer.
        assert len(offers(await _execute_with_cell_id(nb, src, "cell-b"))) == 1
    finally:
        await nb.stop()
        srv.stop()


async def test_configuration_from_ipython_config_and_env(tmp_path: Path) -> None:
    srv = OllamaStandIn(models=["llama3.2:latest", "qwen2.5:0.5b"]).start()
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text(
        "c.Gleitzeit.default_model = 'qwen2.5:0.5b'\nc.Gleitzeit.stream_interval = 0.05\n"
    )
    env = {
        **os.environ,
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "GLEITZEIT_OLLAMA_HOSTS": f"{srv.url},",
        "OLLAMA_HOST": "127.0.0.1:1",  # GLEITZEIT_OLLAMA_HOSTS wins
    }
    nb = Notebook(tmp_path)
    await nb.start(env=env)
    try:
        cell = await nb.run(
            "%load_ext gleitzeit_jupyter\n"
            "from gleitzeit_jupyter.kernel.config import Gleitzeit\n"
            "cfg = [c for c in get_ipython().configurables if isinstance(c, Gleitzeit)][0]\n"
            "print(cfg.ollama_hosts, cfg.default_model, cfg.stream_interval)"
        )
        assert cell.stream().strip() == f"['{srv.url}'] qwen2.5:0.5b 0.05", cell
        cell = await nb.run("%%llm\nWhich model?")
        assert cell.ok, cell
        assert cell.data("text/plain")[-1].startswith("qwen2.5:0.5b · "), cell
        assert srv.requests_to("/api/generate")[-1].body["model"] == "qwen2.5:0.5b"
        # %config changes it for the next call.
        cell = await nb.run("%config Gleitzeit.default_model = 'llama3.2'\nx = %llm again")
        assert cell.ok, cell
        assert srv.requests_to("/api/generate")[-1].body["model"] == "llama3.2"
    finally:
        await nb.stop()
        srv.stop()
