"""%%sandbox through a real shell against the real docker engine and sandbox image."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Iterator

import docker
import docker.errors
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.kernel.render import CellError, CellInterrupted, SandboxException
from gleitzeit_jupyter.kernel.runtime import current_runtime
from gleitzeit_jupyter.providers.sandbox.engine import OWNER_LABEL, owner_label
from gleitzeit_jupyter.providers.sandbox.sweep import RUN_UIDS


@pytest.fixture(scope="module")
def dock() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()  # no engine: the tests fail here, loudly
    yield client
    client.close()


def my_containers(dock: docker.DockerClient) -> list:
    return dock.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner_label()}"})


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_runs_in_the_sandbox_and_shows_like_a_local_cell(shell: InteractiveShell) -> None:
    cell = run(
        shell,
        "%%sandbox\nimport os, sys\nprint('uid', os.getuid())\n"
        "print('oops', file=sys.stderr)\n6 * 7",
    )
    assert cell.error is None, cell.text
    uid = int(cell.stdout.split()[1])
    assert cell.stdout == f"uid {uid}\n" and uid in RUN_UIDS  # a uid of the run's own
    assert cell.stderr == "oops\n"
    assert cell.data("text/plain") == ["42"]


def test_in_out_values(shell: InteractiveShell) -> None:
    shell.user_ns["df"] = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    shell.user_ns["k"] = 10
    cell = run(
        shell,
        "%%sandbox --in df,k --out total,doubled,names -o res\n"
        "total = int(df.a.sum()) * k\ndoubled = df.assign(a=df.a * 2)\nnames = list(df.b)",
    )
    assert cell.error is None, cell.text
    ns = shell.user_ns
    assert ns["total"] == 60 and ns["names"] == ["x", "y", "z"]
    pd.testing.assert_frame_equal(ns["doubled"], ns["df"].assign(a=[2, 4, 6]))
    res = ns["res"]
    assert res["exit_code"] == 0 and res["instance"] and res["duration_ms"] > 0
    assert set(res["values"]) == {"total", "doubled", "names"}

    cell = run(shell, "%%sandbox --in nothing_here\n1")
    assert isinstance(cell.error, CellError)
    assert lines(cell.text) == [
        "UsageError: %%sandbox --in: no variable 'nothing_here' in the notebook"
    ]
    shell.user_ns["fn"] = lambda: 1  # no safe encoding: refused, not pickled
    cell = run(shell, "%%sandbox --in fn\n1")
    assert isinstance(cell.error, CellError) and len(lines(cell.text)) == 1
    assert "fn" in cell.text and "function" in cell.text


def test_matplotlib_figure_displays(shell: InteractiveShell) -> None:
    cell = run(
        shell,
        "%%sandbox\nimport matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')",
    )
    assert cell.error is None, cell.text
    pngs = cell.data("image/png")
    assert len(pngs) == 1
    import base64

    assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_exception_traceback_marked_as_sandbox(shell: InteractiveShell) -> None:
    cell = run(shell, "%%sandbox\ndef f(x):\n    return 1 / x\n\nf(0)")
    assert isinstance(cell.error, SandboxException)
    out = lines(cell.text)
    assert out[0].startswith("--- raised in the sandbox sandbox-")
    assert out[1] == "Traceback (most recent call last):"
    assert out[-1] == "ZeroDivisionError: division by zero"
    assert "return 1 / x" in cell.text
    assert "gleitzeit_jupyter" not in cell.text  # nothing from our side of the boundary


def test_timeout_is_one_line(shell: InteractiveShell) -> None:
    start = time.monotonic()
    cell = run(shell, "%%sandbox --timeout 1\nimport time\ntime.sleep(30)")
    assert time.monotonic() - start < 8
    assert isinstance(cell.error, CellError)
    (line,) = lines(cell.text)
    assert line.startswith("Timeout: %%sandbox: the run exceeded its 1 s timeout")
    assert run(shell, "%%sandbox\nprint('next')").stdout == "next\n"


def test_sessions_keep_state_and_reset(shell: InteractiveShell) -> None:
    assert run(shell, "%%sandbox --session s1\ncounter = 1").error is None
    cell = run(shell, "%%sandbox --session s1\ncounter += 1\nprint(counter)")
    assert cell.stdout == "2\n", cell.text
    cell = run(shell, "%%sandbox\nprint('counter' in dir())")  # no session: fresh
    assert cell.stdout == "False\n", cell.text
    cell = run(shell, "%sandbox --reset --session s1")
    assert cell.error is None and "reset" in cell.stdout, cell.text
    cell = run(shell, "%%sandbox --session s1\nprint(counter)")
    assert isinstance(cell.error, SandboxException) and "NameError" in cell.text


def sleepers(dock: docker.DockerClient) -> list:
    """Processes named gz-sleeper in this process's sandbox containers."""
    found = []
    for c in dock.containers.list(filters={"label": f"{OWNER_LABEL}={owner_label()}"}):
        try:
            top = dock.api.top(c.id, ps_args="-eo pid,comm")
        except docker.errors.APIError:  # removed or stopping while we looked: nothing runs
            continue
        found += [p for p in top.get("Processes") or [] if "gz-sleeper" in p[-1]]
    return found


def test_interrupt_kills_the_run(shell: InteractiveShell, dock: docker.DockerClient) -> None:
    assert run(shell, "%%sandbox\n1").error is None
    during: list = []
    # The sandboxed code names itself so `docker top` can see whether it still runs.
    threading.Timer(2.0, lambda: during.append(sleepers(dock))).start()
    threading.Timer(3.0, _thread.interrupt_main).start()
    start = time.monotonic()
    cell = run(
        shell,
        "%%sandbox --timeout 120\nimport ctypes, time\n"
        "ctypes.CDLL(None).prctl(15, b'gz-sleeper', 0, 0, 0)\ntime.sleep(60)",
    )
    took = time.monotonic() - start
    assert isinstance(cell.error, CellInterrupted)
    assert took < 8, took
    assert lines(cell.text) == ["Interrupted: %%sandbox stopped; the sandbox run was killed"]
    assert during and len(during[0]) == 1, during  # it was running...
    # ...and is gone right after: the provider kills it while replacing the container.
    ended = time.monotonic()
    while sleepers(dock) and time.monotonic() - ended < 5:
        time.sleep(0.1)
    assert sleepers(dock) == [], "the interrupted run is still running in the sandbox"
    # The kernel and the pool go on.
    cell = run(shell, "%%sandbox\nprint('after')")
    assert cell.stdout == "after\n", cell.text
    provider = current_runtime().providers["sandbox"]
    assert len(provider.instances) <= provider.max_instances


def test_limits_get_their_own_pool(shell: InteractiveShell, dock: docker.DockerClient) -> None:
    cell = run(shell, "%%sandbox --mem 256m -o r\nprint('small')")
    assert cell.stdout == "small\n", cell.text
    assert "sandbox[mem=256m]" in current_runtime().providers
    attrs = dock.api.inspect_container(shell.user_ns["r"]["container"])
    assert attrs["HostConfig"]["Memory"] == 256 * 1024 * 1024
    cell = run(shell, "%%sandbox --network -o r\nprint('net')")
    assert cell.error is None, cell.text
    attrs = dock.api.inspect_container(shell.user_ns["r"]["container"])
    assert attrs["HostConfig"]["NetworkMode"] != "none"
    cell = run(
        shell, "%%sandbox --image gleitzeit-sandbox:minimal\nimport sys; print(sys.version_info[0])"
    )
    assert cell.stdout == "3\n", cell.text
    assert "sandbox[image=gleitzeit-sandbox:minimal]" in current_runtime().providers


def test_no_docker_engine_is_one_line(shell: InteractiveShell) -> None:
    shell.run_cell("%config Gleitzeit.docker_host = 'unix:///tmp/no-such-docker.sock'")
    try:
        cell = run(shell, "%%sandbox\n1")
    finally:
        shell.run_cell("%config Gleitzeit.docker_host = ''")
    assert isinstance(cell.error, CellError)
    (line,) = lines(cell.text)
    assert "docker" in line.lower() and "Gleitzeit.docker_host" in line


def test_unload_removes_containers(shell: InteractiveShell, dock: docker.DockerClient) -> None:
    assert run(shell, "%%sandbox\n1").error is None
    assert my_containers(dock), "the pool should hold a warm container"
    shell.run_cell("%unload_ext gleitzeit_jupyter")
    assert my_containers(dock) == []
    assert not [t for t in threading.enumerate() if t.name == "gleitzeit-runtime"]
    assert shell.run_cell("%load_ext gleitzeit_jupyter").success


def test_gleitzeit_add_and_remove_sandbox(shell: InteractiveShell) -> None:
    assert run(shell, "%%sandbox\n1").error is None
    provider = current_runtime().providers["sandbox"]
    before = {i.id for i in provider.instances}
    cell = run(shell, "%gleitzeit add sandbox")
    assert cell.error is None, cell.text
    (added,) = {i.id for i in provider.instances} - before
    assert f"added {added} to sandbox" in cell.stdout
    cell = run(shell, f"%gleitzeit remove {added}")
    assert cell.error is None, cell.text
    assert {i.id for i in provider.instances} == before
