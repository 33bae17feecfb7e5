"""%sandbox install: a derived image from the notebook, and the pool moved to it without
losing runs (a real shell, the real engine, real pip)."""

from __future__ import annotations

import threading

from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.kernel.runtime import current_runtime


def test_install_switches_the_pool_and_keeps_a_running_run(shell: InteractiveShell) -> None:
    assert run(shell, "%sandbox 1").error is None
    rt = current_runtime()
    old = rt.sandbox()
    result: dict = {}

    def long_run() -> None:
        code = "import time\ntime.sleep(3)\nprint('finished')"
        result.update(rt.run(old.execute("python/execute", {"code": code})))

    worker = threading.Thread(target=long_run)
    worker.start()
    cell = run(shell, "%sandbox install threadpoolctl")
    assert cell.error is None, cell.text
    assert "the pool uses it now" in cell.stdout
    bars = [t for t in cell.data("text/plain") if "%sandbox install threadpoolctl" in t]
    assert bars and bars[0].startswith("[")  # the progress bar
    new = rt.sandbox()
    assert new is not old
    used = run(shell, "%sandbox import threadpoolctl; 'ok'")
    assert used.error is None, used.text
    worker.join(30)
    assert result.get("stdout") == "finished\n", result  # ran to its end on the old pool
    shell.run_cell("%config Gleitzeit.sandbox_image = ''")


def test_install_of_something_that_is_not_a_package_is_one_line(
    shell: InteractiveShell,
) -> None:
    cell = run(shell, "%sandbox install https://example.invalid/x.whl")
    assert cell.error is not None and "not a package requirement" in str(cell.error)
