"""%%sandbox end to end: a real kernel (nbclient) on the real docker engine."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import docker
from nb_harness import Notebook

from gleitzeit_jupyter.providers.sandbox.engine import OWNER_LABEL


def containers_of(client: docker.DockerClient, owner: str) -> list:
    return client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})


async def test_sandbox_notebook_interrupt_and_restart(tmp_path: Path) -> None:
    dock = docker.from_env()
    dock.ping()  # no engine: fail here, loudly
    nb = Notebook(tmp_path)
    await nb.start()
    try:
        cell = await nb.run(
            "%load_ext gleitzeit_jupyter\n"
            "import os, threading, pandas as pd\n"
            "from gleitzeit_jupyter.providers.sandbox.engine import owner_label\n"
            "df = pd.DataFrame({'x': range(10)})\n"
            "print(owner_label())\nprint(os.getpid())"
        )
        assert cell.ok, cell
        owner, pid = cell.stream().split()
        pid_i = int(pid)

        # --in / --out, stdout and the last expression's rich output.
        cell = await nb.run(
            "%%sandbox --in df --out stats,squares\n"
            "print('rows', len(df))\n"
            "stats = {'sum': int(df.x.sum())}\n"
            "squares = df.assign(y=df.x ** 2)\n"
            "squares.head(3)"
        )
        assert cell.ok, cell
        assert cell.stream() == "rows 10\n"
        assert cell.data("text/html") and "<table" in cell.data("text/html")[0]
        cell = await nb.run("print(stats, squares.y.sum())")
        assert cell.stream().strip() == "{'sum': 45} 285", cell

        # A matplotlib figure comes back as a PNG.
        cell = await nb.run(
            "%%sandbox\nimport matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\nax.bar(['a', 'b'], [3, 5])\nax.set_title('bars')"
        )
        assert cell.ok, cell
        (png,) = cell.data("image/png")
        assert base64.b64decode(png)[:4] == b"\x89PNG"

        # An exception in the sandbox: its traceback, marked, as the cell's error.
        cell = await nb.run("%%sandbox\n{}['missing']")
        assert [e["ename"] for e in cell.errors] == ["SandboxException"], cell
        text = cell.error_text()
        assert text.startswith("--- raised in the sandbox") and "KeyError: 'missing'" in text

        # Interrupt a long %%sandbox: one line, quickly; the kernel and the pool go on.
        cell, took = await nb.run_and_interrupt(
            "%%sandbox --timeout 300\nimport time\ntime.sleep(120)", after=2.0
        )
        assert took < 5, took
        assert [e["ename"] for e in cell.errors] == ["CellInterrupted"], cell
        assert cell.error_text() == "Interrupted: %%sandbox stopped; the sandbox run was killed"
        cell = await nb.run("%%sandbox\nprint('still here')")
        assert cell.stream() == "still here\n", cell

        # %gleitzeit metrics covers the sandbox pool too.
        cell = await nb.run(
            "import json\nm = %gleitzeit metrics\n"
            "print(json.dumps(sorted(set(m.provider))), int(m.runs.max()) >= 4)"
        )
        assert cell.stream().strip() == '["sandbox"] True', cell

        cell = await nb.run(
            "print(sorted(t.name for t in threading.enumerate() if 'gleitzeit' in t.name))"
        )
        assert "gleitzeit-runtime" in cell.stream(), cell
        assert containers_of(dock, owner), "a warm container should exist before the restart"

        # Restart the kernel: the old process is gone and so are its containers.
        await nb.restart()
        deadline = time.monotonic() + 30
        for _ in range(150):  # polls: the old process and its containers, up to 30 s
            if time.monotonic() > deadline or not (_alive(pid_i) or containers_of(dock, owner)):
                break
            await asyncio.sleep(0.2)
        assert not _alive(pid_i), "the old kernel process is still running"
        assert containers_of(dock, owner) == [], "containers left behind by the old kernel"
        cell = await nb.run(
            "import threading, os\n"
            f"print(os.getpid() != {pid_i}, [t.name for t in threading.enumerate()"
            " if t.name == 'gleitzeit-runtime'])"
        )
        assert cell.stream().strip() == "True []", cell
        cell = await nb.run("%load_ext gleitzeit_jupyter")
        cell = await nb.run("%%sandbox\nprint('fresh kernel')")
        assert cell.stream() == "fresh kernel\n", cell
        nb.save("sandbox.ipynb")
        assert json.loads((tmp_path / "sandbox.ipynb").read_text())["cells"]
    finally:
        await nb.stop()
        dock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
