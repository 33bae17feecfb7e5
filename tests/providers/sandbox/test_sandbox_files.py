"""Files into a run and back through ``python/execute``, and what a hostile run can send
back instead (real engine, real pool)."""

from __future__ import annotations

import pytest

from gleitzeit_jupyter.hub import UserError
from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.files import matches_download, safe_name

from .conftest import run
from .test_sandbox_hostile import FORGE, still_serves

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


async def test_files_arrive_under_their_names_and_come_back(pool: PythonProvider) -> None:
    code = (
        "import os\ndata = open('in/a.csv', 'rb').read()\nos.makedirs('out/deep')\n"
        "open('out/deep/b.bin', 'wb').write(data[::-1])\nopen('skip.txt', 'w').write('no')\n"
        "os.symlink('/etc/passwd', 'out/link')\n"
    )
    r = await run(pool, code, files={"in/a.csv": b"a,b\x00\xff"}, download=["out/**/*", "missing*"])
    assert r["error"] is None, r
    assert r["files"] == {"out/deep/b.bin": b"\xff\x00b,a"}  # no link, no directory


async def test_each_run_has_a_private_working_directory(pool: PythonProvider) -> None:
    await run(pool, "open('left.txt', 'w').write('x')")
    r = await run(pool, "import os\nprint(sorted(os.listdir('.')))", download=["*"])
    assert r["stdout"] == "[]\n" and r["files"] == {}, r


@pytest.mark.parametrize(
    "files",
    [{"../x": b""}, {"/etc/x": b""}, {"a\x00b": b""}, {"a/../../b": b""}, {"x": "text"}],
)
async def test_unsafe_uploads_are_refused_before_the_run(
    pool: PythonProvider, files: dict[str, object]
) -> None:
    with pytest.raises(UserError):
        await run(pool, "print(1)", files=files)


@pytest.mark.parametrize("pattern", ["/etc/*", "../*", "a/../../*", ""])
async def test_unsafe_download_patterns_are_refused(pool: PythonProvider, pattern: str) -> None:
    with pytest.raises(UserError):
        await run(pool, "print(1)", download=[pattern])


async def test_uploads_over_the_size_cap_are_refused(pool: PythonProvider) -> None:
    with pytest.raises(UserError, match="exceed"):
        await run(pool, "1", files={"big": b"x" * (33 * 1024 * 1024)})


@pytest.mark.parametrize(
    "forged",
    [
        "{'../../.bashrc': 'eA=='}",
        "{'/etc/cron.d/x': 'eA=='}",
        "{'a\\x00b': 'eA=='}",
        "{'ok': 'not base64!'}",
        "{str(i): 'eA==' for i in range(5000)}",
        "['x']",
    ],
)
async def test_forged_files_in_a_reply_never_reach_the_caller(
    pool: PythonProvider, forged: str
) -> None:
    inst = pool.instances[0].id
    code = FORGE + f"forge({{'exit_code': 0, 'error': None, 'files': {forged}}})\n"
    r = await run(pool, code, instance=inst, download=["*"])
    assert r["files"] == {}, r["files"]
    if forged.startswith("{"):  # a list is dropped by the supervisor already
        assert r["error"] is not None and r["error"]["ename"] == "FileTransferError", r
    await still_serves(pool, inst)


async def test_cpu_and_memory_are_measured_not_claimed(pool: PythonProvider) -> None:
    code = FORGE + (
        "x = sum(i * i for i in range(2_000_000))\n"
        "forge({'exit_code': 0, 'error': None, 'cpu_ms': 1e9, 'peak_memory_mb': 1e9})\n"
    )
    r = await run(pool, code)
    assert 20 < r["cpu_ms"] < 1e6 and 1 < r["peak_memory_mb"] < 4096, r


async def test_forged_display_frames_are_capped_and_sanitised(pool: PythonProvider) -> None:
    inst = pool.instances[0].id
    code = FORGE + (
        "bad = {'type': 'display_data', 'data': {'text/html': '<script>alert(1)</script><b>x</b>',"
        " 'application/javascript': 'alert(2)'}}\n"
        "for _ in range(300):\n"
        "    forge({'op': 'display', 'output': bad, 'at': [10**12, -5]})\n"
    )
    chunks = [c async for c in pool.stream("python/execute", {"code": code}, instance=inst)]
    shown = [c["output"] for c in chunks if "output" in c]
    done = chunks[-1]
    assert len(shown) <= 100 and len(done["outputs"]) <= 101
    for out in shown + done["outputs"]:
        assert "<script" not in str(out) and "application/javascript" not in out["data"]
    await still_serves(pool, inst)


async def test_only_plain_relative_names_are_safe() -> None:
    assert safe_name("a/b.csv") == "a/b.csv"
    for bad in ("", "/a", "../a", "a/..", "a//b", "a\\b", "a\x00", "./a", "a\nb", 7, "x" * 2000):
        assert safe_name(bad) is None, bad


@pytest.mark.parametrize(
    ("download", "forged"),
    [
        (None, "{'numpy.py': 'eA=='}"),
        (["*.csv"], "{'numpy.py': 'eA=='}"),
        (["*.csv"], "{'.ipython/profile_default/startup/x.py': 'eA=='}"),
        (["**/*.csv"], "{'.git/hooks/a.csv': 'eA=='}"),
        (["out/*"], "{'out/a/b': 'eA=='}"),
    ],
)
async def test_a_reply_cannot_return_files_nobody_asked_for(
    pool: PythonProvider, download: list[str] | None, forged: str
) -> None:
    # Downloaded files land in the kernel's cwd, which is on its import path and may be the
    # user's home: a name the patterns do not match could be a module or a startup script.
    inst = pool.instances[0].id
    code = FORGE + f"forge({{'exit_code': 0, 'error': None, 'files': {forged}}})\n"
    r = await run(pool, code, instance=inst, download=download)
    assert r["files"] == {}, r["files"]
    assert r["error"] is not None and r["error"]["ename"] == "FileTransferError", r
    await still_serves(pool, inst)


async def test_names_match_download_patterns_as_glob_would() -> None:
    assert matches_download("a.csv", ["*.csv"])
    assert matches_download("d/e/a.csv", ["**/*.csv"]) and matches_download("a.csv", ["**/*.csv"])
    assert matches_download("out/deep/b.bin", ["out/**/*"])
    assert matches_download(".env", [".env"]) and matches_download("d/.x", ["d/.*"])
    assert not matches_download("d/a.csv", ["*.csv"])
    assert not matches_download(".a.csv", ["*.csv"])
    assert not matches_download(".git/a.csv", ["**/*.csv"])
    assert not matches_download("x", [])
    assert not matches_download("a/" * 300 + "b", ["**/" * 30 + "c"])


async def test_names_that_display_as_something_else_are_not_safe() -> None:
    # Shown in the cell's summary line and written to the user's disk: a right-to-left
    # override makes "x\u202egpj.py" read as "xyp.jpg"; a lone surrogate cannot be a path.
    for bad in ("x\u202egpj.py", "a\u200bb", "a\x7fb", "a\x9bb", "a\u2028b", "a\ud800b"):
        assert safe_name(bad) is None, repr(bad)
    assert safe_name("données/été.csv") == "données/été.csv"
