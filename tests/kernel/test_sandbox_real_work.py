"""%sandbox for real work: the line form, outputs in order, files both ways, the footer
(a real shell against the real docker engine and sandbox image)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.kernel.render import CellError, SandboxException


@pytest.fixture(scope="module", autouse=True)
def engine() -> Iterator[None]:
    client = docker.from_env()
    client.ping()  # no engine: the tests fail here, loudly
    yield
    client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(before)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def test_line_form_runs_one_line_and_returns_its_value(shell: InteractiveShell) -> None:
    cell = run(shell, "%sandbox print(1); 6 * 7")
    assert cell.error is None, cell.text
    assert cell.stdout.splitlines()[0] == "1"
    assert cell.data("text/plain") == ["42"]


def test_line_form_takes_options_before_the_code(shell: InteractiveShell) -> None:
    shell.user_ns["k"] = 5
    cell = run(shell, "%sandbox --in k --out m m = k * 3")
    assert cell.error is None, cell.text
    assert shell.user_ns["m"] == 15


def test_line_form_without_code_is_a_usage_error(shell: InteractiveShell) -> None:
    cell = run(shell, "%sandbox --timeout 5")
    assert cell.error is not None and "nothing to run" in str(cell.error)


def test_display_appears_between_the_prints_around_it(shell: InteractiveShell) -> None:
    cell = run(
        shell,
        "%%sandbox\nfrom IPython.display import display, HTML\nprint('before')\n"
        "display(HTML('<b>middle</b>'))\nprint('after')\n'last'",
    )
    assert cell.error is None, cell.text
    # capture_output splits streams from outputs; the order is checked on the wire below.
    assert cell.data("text/html") == ["<b>middle</b>"]
    assert cell.data("text/plain")[-1] == "'last'"
    assert cell.stdout.splitlines()[:2] == ["before", "after"]


def test_display_is_streamed_in_its_place(shell: InteractiveShell) -> None:
    from gleitzeit_jupyter.kernel.runtime import current_runtime

    rt = current_runtime()
    assert rt is not None or run(shell, "%sandbox 1").error is None
    rt = current_runtime()
    provider = rt.sandbox()
    code = "print('a', flush=True)\ndisplay('b')\nprint('c')\ndisplay('d')"
    seen: list[str] = []
    for chunk in rt.stream(lambda: provider.stream("python/execute", {"code": code})):
        if chunk.get("done"):
            assert chunk["streamed_outputs"] == 2
            assert [o["data"]["text/plain"] for o in chunk["outputs"]] == ["'b'", "'d'"]
        elif "output" in chunk:
            seen.append(chunk["output"]["data"]["text/plain"])
        else:
            seen += chunk.get("stdout", "").split()
    assert seen == ["a", "'b'", "c", "'d'"]


def test_missing_module_says_how_to_add_it(shell: InteractiveShell) -> None:
    cell = run(shell, "%sandbox import sklearn")
    assert isinstance(cell.error, SandboxException)
    assert "ModuleNotFoundError: No module named 'sklearn'" in cell.text
    assert lines(cell.text)[-1].startswith("hint: ") and "%sandbox install sklearn" in cell.text


def test_footer_shows_host_measured_cpu_and_memory(shell: InteractiveShell) -> None:
    cell = run(shell, "%%sandbox -o res\nx = sum(i * i for i in range(3_000_000))")
    assert cell.error is None, cell.text
    res = shell.user_ns["res"]
    assert res["cpu_ms"] > 50, res  # the loop took real CPU time
    assert 1 < res["peak_memory_mb"] < 2048
    assert cell.footer is not None and "cpu " in cell.footer and "MiB" in cell.footer


def test_upload_and_download_move_files_under_their_names(
    shell: InteractiveShell, workdir: Path
) -> None:
    (workdir / "data.csv").write_text("a,b\n1,2\n3,4\n")
    (workdir / "conf").mkdir()
    (workdir / "conf" / "x.txt").write_text("x")
    cell = run(
        shell,
        "%%sandbox --upload data.csv --upload conf --download 'out/*.csv'\n"
        "import os\nrows = open('data.csv').read().splitlines()\nos.mkdir('out')\n"
        "open('out/rows.csv', 'w').write(str(len(rows)) + open('conf/x.txt').read())",
    )
    assert cell.error is None, cell.text
    assert (workdir / "out" / "rows.csv").read_text() == "3x"
    summary = [ln for ln in cell.stdout.splitlines() if ln.startswith("sandbox files:")]
    assert len(summary) == 1
    assert "sent 2 files" in summary[0] and "received 1 file" in summary[0]


def test_upload_refuses_links_and_paths_outside(shell: InteractiveShell, workdir: Path) -> None:
    (workdir / "secret").symlink_to("/etc/passwd")
    for option in ("--upload secret", "--upload /etc/passwd", "--upload ../x"):
        cell = run(shell, f"%%sandbox {option}\n1")
        assert isinstance(cell.error, CellError), option


def test_download_never_follows_a_link_out_of_the_cwd(
    shell: InteractiveShell, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (workdir / "out").symlink_to(elsewhere)
    cell = run(
        shell,
        "%%sandbox --download 'out/*'\nimport os\nos.mkdir('out')\nopen('out/f', 'w').write('x')",
    )
    assert isinstance(cell.error, CellError)
    assert list(elsewhere.iterdir()) == []


def test_a_value_crossing_major_versions_warns_once(shell: InteractiveShell) -> None:
    import numpy as np

    from gleitzeit_jupyter.kernel import sandbox_cell
    from gleitzeit_jupyter.kernel.runtime import current_runtime

    sandbox_cell._WARNED.clear()  # as in a new kernel
    assert run(shell, "%sandbox 1").error is None
    hello = current_runtime().sandbox().instances[0].handle.container.hello
    inside = hello["versions"]["numpy"]
    assert inside.split(".")[0].isdigit()
    shell.user_ns["arr"] = np.arange(3)
    first = run(shell, "%sandbox --in arr --out n n = len(arr)")
    second = run(shell, "%sandbox --in arr --out n n = len(arr)")
    mismatch = inside.split(".")[0] != np.__version__.split(".")[0]
    warning = f"the sandbox image has numpy {inside}, the kernel numpy {np.__version__}"
    assert (warning in first.stderr) is mismatch, first.stderr
    assert warning not in second.stderr  # once per kernel, not under every cell
    plain = run(shell, "%sandbox --in n --out m m = n")
    assert "gleitzeit warning" not in plain.stderr  # an int crosses unchanged


def test_download_replaces_files_without_writing_through_them_and_says_so(
    shell: InteractiveShell, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import signal

    elsewhere = tmp_path_factory.mktemp("elsewhere") / "authorized_keys"
    elsewhere.write_text("mine")
    os.link(elsewhere, workdir / "a.csv")  # a hard link: truncating it would change the other
    os.mkfifo(workdir / "b.csv")  # opening it for writing would wait for a reader forever
    (workdir / "c.csv").write_text("old")
    signal.alarm(60)
    try:
        cell = run(
            shell,
            "%%sandbox --download '*.csv'\n"
            "for n in 'abcd':\n    open(n + '.csv', 'w').write('new')",
        )
    finally:
        signal.alarm(0)
    assert cell.error is None, cell.text
    assert elsewhere.read_text() == "mine"
    for n in "abcd":
        assert (workdir / f"{n}.csv").read_text() == "new"
    summary = [ln for ln in cell.stdout.splitlines() if ln.startswith("sandbox files:")]
    assert len(summary) == 1 and "replaced 3 existing: a.csv, b.csv, c.csv" in summary[0], summary
    assert sorted(p.name for p in workdir.iterdir()) == ["a.csv", "b.csv", "c.csv", "d.csv"]


def test_upload_of_a_huge_directory_is_refused_quickly(workdir: Path) -> None:
    import time

    from gleitzeit_jupyter.kernel.sandbox_files import collect_uploads

    (workdir / "d").mkdir()
    for i in range(30_000):
        (workdir / "d" / str(i)).touch()
    started = time.perf_counter()
    with pytest.raises(CellError, match="1000"):
        collect_uploads(["d"])
    assert time.perf_counter() - started < 3.0  # it stops counting at the limit


def test_a_download_name_the_file_system_refuses_is_a_cell_error(workdir: Path) -> None:
    from gleitzeit_jupyter.kernel.sandbox_files import save_downloads

    for name in ("d" * 300 + "/x", "a" * 300):
        with pytest.raises(CellError, match="too long"):
            save_downloads({name: b"x"})
    assert list(workdir.iterdir()) == []


def test_a_million_row_frame_goes_in_and_back_at_the_default_memory_limit(
    shell: InteractiveShell,
) -> None:
    import numpy as np
    import pandas as pd

    n = 1_000_000
    big = pd.DataFrame(
        {
            "a": np.arange(n),
            "b": np.random.default_rng(0).random(n),
            "kind": pd.Categorical(np.where(np.arange(n) % 3, "x", "y")),
        }
    )
    shell.user_ns["big"] = big
    # About 17 MB each way: within the default caps and memory limit.
    cell = run(shell, "%%sandbox --in big --out back\nback = big.assign(a=big['a'] * 2)")
    assert cell.error is None, cell.text
    back = shell.user_ns["back"]
    pd.testing.assert_frame_equal(back.drop(columns="a"), big.drop(columns="a"))
    assert back["a"].dtype == big["a"].dtype and int(back["a"].iloc[-1]) == 2 * (n - 1)
