"""%%llm end to end: a real kernel (nbclient) against the Ollama stand-in."""

from __future__ import annotations

import ast
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
        # The progress bar: a live widget that leaves its static picture when it closes.
        bars = [h for h in cell.data("text/html") if 'data-gleitzeit-static="progress"' in h]
        assert bars and "200/200" in bars[-1], cell
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


async def test_structured_answers_images_and_thinking_notebook(tmp_path: Path) -> None:
    """--schema (alone and over --map), an image only the vision server sees, --think."""
    blind = OllamaStandIn(
        models=["gemma3:latest"],
        capabilities={"gemma3:latest": ["completion", "thinking"]},
        tokens_per_s=300,
    ).start()
    seeing = OllamaStandIn(
        models=["gemma3:latest"],
        capabilities={"gemma3:latest": ["completion", "vision", "thinking"]},
        tokens_per_s=300,
    ).start()
    seeing.faults.off_schema_marker = "garbled"
    nb = Notebook(tmp_path)
    await nb.start()
    try:
        cell = await nb.run(
            "%load_ext gleitzeit_jupyter\n"
            f"%config Gleitzeit.ollama_hosts = ['{blind.url}', '{seeing.url}']\n"
            "%config Gleitzeit.default_model = 'gemma3'\n"
            "from typing import Literal\n"
            "from pydantic import BaseModel\n"
            "import pandas as pd\n"
            "class Review(BaseModel):\n"
            "    sentiment: Literal['positive', 'negative', 'mixed']\n"
            "    stars: int\n"
        )
        assert cell.ok, cell

        # One structured answer: a Review instance, shown as JSON.
        cell = await nb.run("%%llm --schema Review -o r\nReview: the kettle boils fast")
        assert cell.ok, cell
        shown = cell.data("application/json")[-1]
        check = await nb.run("print(type(r).__name__, r.model_dump() == " + repr(shown) + ")")
        assert check.stream().strip() == "Review True", check

        # Over --map: one column per field, aligned; the row that fails validation is NaN
        # and named in the summary.
        cell = await nb.run(
            "reviews = pd.DataFrame({'text': ['fast', 'garbled text', 'dim', 'comfy']},"
            " index=[101, 102, 103, 104])"
        )
        assert cell.ok, cell
        cell = await nb.run(
            "%%llm --map reviews --schema Review --strategy round_robin -o table\nReview: {text}"
        )
        assert cell.ok, cell
        summary = cell.stream()
        assert "--map: 4 rows, 3 ok, 1 failed" in summary and "failed rows: 102;" in summary
        assert "tokens, " in summary and " tok/s" in summary
        check = await nb.run(
            "print(list(table.columns), list(table.index), table.loc[102].isna().all(),"
            " table.drop(index=102)['sentiment'].notna().all(), list(table.attrs['errors']))"
        )
        assert check.stream().strip() == (
            "['sentiment', 'stars'] [101, 102, 103, 104] True True [102]"
        ), check

        # An image goes only to the server whose model has vision, whatever the strategy.
        cell = await nb.run(
            "from PIL import Image\n"
            "photo = Image.new('RGB', (16, 9), 'blue')\n"
            "for _ in range(3):\n"
            "    %llm --strategy round_robin --image photo What is in this picture"
        )
        assert cell.ok, cell
        with_images = [
            srv
            for srv in (blind, seeing)
            for r in srv.requests_to("/api/generate")
            if r.body.get("images")
        ]
        assert with_images == [seeing] * 3

        # Thinking: a collapsed section above the answer; -o keeps the answer, .thinking the
        # reasoning.
        cell = await nb.run("%%llm --think -o a\nWhy is the sky blue")
        assert cell.ok, cell
        md = cell.data("text/markdown")
        assert md[0].startswith("<details>\n<summary>thinking</summary>"), cell
        check = await nb.run("print(repr(str(a)))\nprint(repr(a.thinking))")
        answer_repr, thinking_repr = check.stream().strip().splitlines()
        assert repr(md[1]) == answer_repr and "<details>" not in md[1]
        thinking = ast.literal_eval(thinking_repr)
        assert thinking and thinking.split()[0] in md[0]
        nb.save("structured.ipynb")
    finally:
        await nb.stop()
        blind.stop()
        seeing.stop()


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
