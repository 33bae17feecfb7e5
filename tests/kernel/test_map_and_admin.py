"""%%llm --map batches and %gleitzeit, through a real shell against the Ollama stand-in."""

from __future__ import annotations

import _thread
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import HubError, UserError
from gleitzeit_jupyter.kernel import admin, batch
from gleitzeit_jupyter.kernel.interpolate import InterpolationError
from gleitzeit_jupyter.kernel.render import CellError, CellInterrupted
from gleitzeit_jupyter.kernel.runtime import current_runtime
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

CITIES = ["Paris", "Lima", "Oslo", "Pune", "Kyiv"]


def frame(n: int = 200) -> pd.DataFrame:
    # A non-default index: the result must be aligned to it, not to 0..n-1.
    idx = pd.Index([f"r{i:03d}" for i in range(n)][::-1], name="key")
    return pd.DataFrame({"city": [CITIES[i % 5] for i in range(n)], "n": range(n)}, index=idx)


def test_map_over_dataframe_rows(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    shell.user_ns["df"] = frame()
    shell.user_ns["lang"] = "French"
    cell = run(
        shell,
        "%%llm --map df --concurrency 16 -o res --max-tokens 5\nRow {n}: {city} in {lang}",
    )
    assert cell.error is None, cell.text
    res = shell.user_ns["res"]
    df = shell.user_ns["df"]
    assert isinstance(res, pd.Series) and res.name == "res"
    assert res.index.equals(df.index)
    assert all(isinstance(v, str) and len(v.split()) == 5 for v in res)
    assert "--map: 200 rows, 200 ok, 0 failed" in cell.stdout
    assert "200/200" in cell.stderr  # the progress bar ran to the end
    # Row k's answer is the answer to row k's prompt (the stand-in is deterministic).
    for key in ["r000", "r137", "r199"]:
        row = df.loc[key]
        single = run(shell, f"x = %llm --max-tokens 5 Row {row.n}: {row.city} in French")
        assert single.error is None, single.text
        assert res[key] == shell.user_ns["x"]
    prompts = {r.body["prompt"] for r in standin.requests_to("/api/generate")}
    assert "Row 42: Oslo in French" in prompts


def test_map_failed_rows_hold_the_error(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    shell.user_ns["s"] = pd.Series([f"w{i}" for i in range(60)])
    standin.faults.update(error_rate=0.3, error_status=400)  # a caller error: not retried
    try:
        cell = run(shell, "%%llm --map s -o out\nSay {item}")
    finally:
        standin.faults.update(error_rate=0.0, error_status=500)
    assert cell.error is None, cell.text
    out = shell.user_ns["out"]
    failed = [v for v in out if isinstance(v, BaseException)]
    assert 0 < len(failed) < 60
    assert all(isinstance(v, UserError) for v in failed)
    assert all(isinstance(v, str) for v in out if not isinstance(v, BaseException))
    summary = [ln for ln in cell.stdout.splitlines() if ln.startswith("--map:")]
    assert summary == [summary[0]]
    assert f"{60 - len(failed)} ok, {len(failed)} failed" in summary[0]
    assert "first failure at row" in summary[0] and "rejected the call (400)" in summary[0]


def test_map_template_errors(shell: InteractiveShell) -> None:
    shell.user_ns["vals"] = [1, "x", 2]
    cell = run(shell, "%%llm --map vals -o v\nNumber {item.real}")
    assert cell.error is None, cell.text
    v = shell.user_ns["v"]
    assert list(v.index) == [0, 1, 2]
    assert isinstance(v[1], InterpolationError) and "has no attribute 'real'" in str(v[1])
    assert isinstance(v[0], str) and isinstance(v[2], str)
    # A template wrong for the first row is wrong for all: one error, no batch.
    shell.user_ns["vals"] = ["x", 1]
    cell = run(shell, "%%llm --map vals\nNumber {item.real}")
    assert isinstance(cell.error, CellError) and "no attribute 'real'" in cell.text
    cell = run(shell, "%%llm --map nope\nHi {item}")
    assert isinstance(cell.error, CellError)
    assert "--map nope: NameError" in cell.text
    cell = run(shell, "%%llm --map vals --chat c\nHi {item}")
    assert "UsageError" in cell.text and "--chat" in cell.text


def test_map_without_output_displays_series(shell: InteractiveShell) -> None:
    shell.user_ns["d"] = {"a": "one", "b": "two"}
    cell = run(shell, "%%llm --map d --max-tokens 2\n{index}={item}")
    assert cell.error is None, cell.text
    assert "Out[" in cell.stdout and "a " in cell.stdout and "b " in cell.stdout


def test_map_interrupt_keeps_partial(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    shell.user_ns["many"] = list(range(100))
    standin.tokens_per_s = 20  # 12 tokens: ~0.6 s a row, 4 at a time -> ~15 s in all
    try:
        threading.Timer(1.5, _thread.interrupt_main).start()
        start = time.monotonic()
        cell = run(shell, "%%llm --map many --concurrency 4 -o part\nCount {item}")
        took = time.monotonic() - start
    finally:
        standin.tokens_per_s = 200
    assert isinstance(cell.error, CellInterrupted), cell.text
    assert took < 7
    part = shell.user_ns["part"]
    done = [v for v in part if v is not None]
    assert 0 < len(done) < 100 and len(part) == 100
    assert "Interrupted: %%llm --map stopped after" in cell.text
    provider = current_runtime().providers["ollama"]
    deadline = time.monotonic() + 3
    while sum(i.in_flight for i in provider.instances) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(i.in_flight for i in provider.instances) == 0


def test_gleitzeit_status_metrics_export(shell: InteractiveShell, tmp_path: Path) -> None:
    cell = run(shell, "%gleitzeit reset")
    assert cell.error is None, cell.text
    cell = run(shell, "%gleitzeit metrics")
    assert "no pools running yet" in cell.stdout
    assert run(shell, "%%llm\nHello").error is None
    cell = run(shell, "m = %gleitzeit metrics")
    assert cell.error is None, cell.text
    m = shell.user_ns["m"]
    assert list(m.columns[:2]) == ["provider", "instance"]
    assert set(m["provider"]) == {"ollama"}
    assert {"requests", "p95_ms", "success_rate", "tokens_per_s"} <= set(m.columns)
    assert m["requests"].max() >= 1

    csv = tmp_path / "out" / "metrics.csv"
    assert run(shell, f"%gleitzeit metrics --export {csv}").error is None
    back = pd.read_csv(csv)
    assert list(back["provider"]) == list(m["provider"])
    pq = tmp_path / "metrics.parquet"
    assert run(shell, f"%gleitzeit metrics --export {pq}").error is None
    assert list(pd.read_parquet(pq)["instance"]) == list(m["instance"])
    cell = run(shell, f"%gleitzeit metrics --export {tmp_path / 'm.xlsx'}")
    assert "UsageError" in cell.text and ".csv or .parquet" in cell.text

    snaps = admin.snapshots(current_runtime())
    text = admin.status_text(snaps)
    assert text.startswith("ollama (OllamaProvider, strategy fleet): 1/1 available")
    cell = run(shell, "%gleitzeit status")
    assert cell.error is None, cell.text
    # Terminal IPython: the text table (the widget panel is for kernels, see tests/e2e).
    assert cell.stdout.startswith("ollama (OllamaProvider, strategy fleet): 1/1 available")
    assert "instance" not in cell.stdout.splitlines()[0]
    assert current_runtime().providers["ollama"].instances[0].id in cell.stdout


def test_gleitzeit_add_remove_strategy_reset(
    shell: InteractiveShell, standin: OllamaStandIn, standin2: OllamaStandIn
) -> None:
    run(shell, "%gleitzeit reset")
    cell = run(shell, f"%gleitzeit add ollama {standin2.url}")
    assert cell.error is None, cell.text
    provider = current_runtime().providers["ollama"]
    assert {i.endpoint.rstrip("/") for i in provider.instances} == {standin.url, standin2.url}
    added = next(i.id for i in provider.instances if i.endpoint.rstrip("/") == standin2.url)
    assert f"added {added}" in cell.stdout

    cell = run(shell, "%gleitzeit strategy round_robin")
    assert cell.error is None, cell.text
    assert provider.strategy == "round_robin"
    assert current_runtime().providers["ollama"] is provider  # switched, not rebuilt
    cell = run(shell, "%gleitzeit strategy fastest")
    assert "UsageError" in cell.text and "least_loaded" in cell.text

    cell = run(shell, f"%gleitzeit remove {added}")
    assert cell.error is None, cell.text
    assert [i.endpoint.rstrip("/") for i in provider.instances] == [standin.url]
    cell = run(shell, "%gleitzeit remove nothing-here")
    assert "UsageError" in cell.text and "no instance 'nothing-here'" in cell.text

    cell = run(shell, "%gleitzeit reset")
    assert cell.error is None and "stopped pools: ollama" in cell.stdout
    assert current_runtime().providers == {}
    assert "UsageError" in run(shell, "%gleitzeit frobnicate").text
    # Config changes take effect: a new pool from the new hosts.
    shell.run_cell("%config Gleitzeit.strategy = 'least_loaded'")


@pytest.mark.parametrize("bad", ["%gleitzeit status extra", "%gleitzeit add", "%gleitzeit add x y"])
def test_gleitzeit_usage_errors(shell: InteractiveShell, bad: str) -> None:
    cell = run(shell, bad)
    assert "UsageError" in cell.text and "Traceback" not in cell.text


def test_hub_errors_are_catchable(shell: InteractiveShell) -> None:
    cell = run(
        shell,
        "from gleitzeit_jupyter import HubError\n"
        "try:\n    y = %llm -m nope hi\nexcept HubError as e:\n    caught = e\n",
    )
    assert cell.error is None, cell.text
    assert isinstance(shell.user_ns["caught"], HubError)


def test_map_respects_concurrency(shell: InteractiveShell, standin: OllamaStandIn) -> None:
    shell.user_ns["rows"] = list(range(24))
    standin.latency = 0.1
    standin.api.peak_active = 0
    try:
        cell = run(shell, "%%llm --map rows --concurrency 3 -o r\nRow {item}")
    finally:
        standin.latency = 0.0
    assert cell.error is None, cell.text
    assert standin.api.peak_active == 3
    assert list(shell.user_ns["r"].index) == list(range(24))


def test_map_columns_named_item_or_index_fill_their_own_placeholders() -> None:
    frame = pd.DataFrame({"index": [7, 8], "item": ["pen", "cup"]}, index=[10, 11])
    _, rows = batch.map_rows(frame)
    assert [(r["index"], r["item"]) for r in rows] == [(7, "pen"), (8, "cup")]
