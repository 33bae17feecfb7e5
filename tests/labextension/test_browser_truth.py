"""What the panels and the sidebar say at a glance, in a real JupyterLab in headless Chromium:
names that tell three servers on one host apart, nothing clipped with the sidebar open or in
the dark theme, counts that follow failures within a second, and a saved notebook that shows
its panels' last state after a kernel restart and in nbconvert HTML.

Screenshots go to build/screenshots/ (and docs/img/ with GLEITZEIT_UPDATE_DOCS_SCREENSHOTS=1).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

from .lab import LabServer, publish_screenshot, save_screenshot, write_notebook
from .test_browser import SIDEBAR, STATUS, current_panel, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

PANEL = ".gz-panel"


@pytest.fixture(scope="module")
def standins() -> Iterator[list[OllamaStandIn]]:
    """Three servers on one host: their names differ only in the port."""
    servers = [
        OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=400, default_tokens=8, seed=k)
        for k in range(3)
    ]
    for s in servers:
        s.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def run_cell(page: Any, index: int, timeout: float = 60_000) -> None:
    """Run one cell and wait for its prompt number. On a loaded machine a key sent while the
    page is still settling can be lost: send it again while the prompt is empty. Ctrl+Enter,
    not Shift+Enter: it runs the cell in place, so a repeated key never runs the next cell and
    the last cell does not grow a new empty one (which a saved notebook would keep)."""
    cell = current_panel(page).locator(".jp-Cell").nth(index)
    prompt = cell.locator(".jp-InputPrompt")
    for _attempt in range(3):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Control+Enter")
        deadline = time.monotonic() + 10
        while prompt.inner_text().strip() in ("[ ]:", "") and time.monotonic() < deadline:
            time.sleep(0.2)
        if prompt.inner_text().strip() not in ("[ ]:", ""):
            break
    else:
        save_screenshot(page, f"run-cell-{index}-lost")
    expect()(prompt).to_have_text(re.compile(r"\[\d+\]"), timeout=timeout)


def _overflowing(page: Any, selector: str) -> list[str]:
    """Elements under ``selector`` whose content is wider than their box (i.e. clipped)."""
    return page.evaluate(
        """sel => [...document.querySelectorAll(sel)]
            .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 0.5)
            .map(e => `${e.className}: '${e.textContent}' ${e.scrollWidth}>${e.clientWidth}`)""",
        selector,
    )


def _buttons_inside(page: Any) -> list[str]:
    """Panel buttons that are hidden or stick out of their panel."""
    return page.evaluate(
        """() => {
            const bad = [];
            for (const panel of document.querySelectorAll('.gz-panel')) {
                const box = panel.getBoundingClientRect();
                for (const b of panel.querySelectorAll('.gz-drain, .gz-reset')) {
                    const r = b.getBoundingClientRect();
                    if (b.offsetParent === null || r.width === 0 || r.right > box.right + 0.5)
                        bad.push(`${b.className} right=${r.right} panel=${box.right}`);
                }
            }
            return bad;
        }"""
    )


def _assert_nothing_clipped(page: Any, where: str) -> None:
    assert not _overflowing(page, f"{PANEL} .gz-cell-instance"), where
    assert not _overflowing(page, f"{PANEL} .gz-head"), (where, _overflowing(page, ".gz-head"))
    assert not _overflowing(page, f"{PANEL} .gz-grid"), where  # no horizontal scrolling
    assert not _overflowing(page, f"{PANEL} .gz-latency-plot"), where  # the chart scales
    assert not _overflowing(page, f"{SIDEBAR} .gzl-instance-id"), where
    assert not _buttons_inside(page), (where, _buttons_inside(page))


def _luminance(css: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_names_layout_dark_theme_and_live_counts(
    page: Any, lab: LabServer, standins: list[OllamaStandIn]
) -> None:
    ex = expect()
    write_notebook(
        lab.root / "truth.ipynb",
        [
            "%load_ext gleitzeit_jupyter",
            "%%llm\nSay hello.",
            "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
            "from gleitzeit_jupyter.kernel.widgets import show_status\n"
            "llm_panel = show_status(get_runtime().providers['ollama'])",
            "%%sandbox\nprint('warm')",
            "sandbox_panel = show_status(get_runtime().providers['sandbox'])",
            "%%llm\nAnd again.",
        ],
    )
    page.goto(lab.url("/lab/tree/truth.ipynb"))
    ex(current_panel(page).locator(".jp-Cell")).to_have_count(6, timeout=90_000)
    ex(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=90_000
    )
    for i in range(5):
        run_cell(page, i, timeout=180_000)
    llm = page.locator(f"{PANEL}.gz-provider-ollama")
    ex(llm.locator(".gz-cell-instance.gz-inst")).to_have_count(3, timeout=30_000)

    # Names: three servers on 127.0.0.1 read distinctly; the full name is on hover.
    names = llm.locator(".gz-cell-instance.gz-inst").all_inner_texts()
    assert names == [f"\u2026:{s.port}" for s in standins], names
    for s in standins:
        cell = llm.locator(".gz-cell-instance.gz-inst", has_text=f":{s.port}")
        assert f"127.0.0.1:{s.port}" in (cell.locator("span[title]").get_attribute("title") or "")

    # The sidebar open: both panels fit the notebook, nothing clipped, buttons reachable.
    page.locator(STATUS).click()
    ex(page.locator(SIDEBAR)).to_be_visible()
    ex(page.locator(f"{SIDEBAR} li.gzl-instance")).to_have_count(3 + 1, timeout=30_000)
    ex(page.locator(f"{PANEL}.gz-provider-sandbox .gz-head-extra")).to_have_text("runs / recyc.")
    page.wait_for_timeout(500)
    _assert_nothing_clipped(page, "sidebar open")
    sidebar_names = page.locator(f"{SIDEBAR} section[data-provider='ollama'] .gzl-instance-id")
    assert sorted(sidebar_names.all_inner_texts()) == sorted(names)
    shot = save_screenshot(page, "20-panels-with-sidebar")
    publish_screenshot(shot, "panels-sidebar-open.png")
    llm_shot = save_screenshot(page, "21-llm-panel")
    llm.screenshot(path=str(llm_shot))
    publish_screenshot(llm_shot, "status-panel-lab.png")

    # Narrower still (a laptop with the sidebar open): columns go, the buttons stay.
    page.set_viewport_size({"width": 1000, "height": 900})
    page.wait_for_timeout(800)
    _assert_nothing_clipped(page, "1000 px")
    assert llm.locator(".gz-head-p50_ms").is_hidden()
    save_screenshot(page, "22-panels-narrow")
    page.set_viewport_size({"width": 1440, "height": 900})

    # The dark theme: the panel's text is light on a dark background.
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Dark'})"
    )
    ex(page.locator("body[data-jp-theme-light='false']")).to_have_count(1, timeout=30_000)
    page.wait_for_timeout(1000)
    fg = llm.locator(".gz-cell-requests.gz-row-ALL").evaluate("e => getComputedStyle(e).color")
    head = llm.locator(".gz-head-requests").evaluate("e => getComputedStyle(e).color")
    bg = page.evaluate(
        "() => getComputedStyle(document.querySelector('.jp-Notebook')).backgroundColor"
    )
    assert _luminance(bg) < 0.3 and _luminance(fg) > 0.6 and _luminance(head) > 0.4, (fg, bg)
    _assert_nothing_clipped(page, "dark theme")
    dark = save_screenshot(page, "23-panels-dark")
    publish_screenshot(dark, "panels-dark.png")
    page.evaluate(
        "() => window.jupyterapp.commands.execute('apputils:change-theme',"
        " {theme: 'JupyterLab Light'})"
    )
    ex(page.locator("body[data-jp-theme-light='true']")).to_have_count(1, timeout=30_000)

    # Every server killed: the next calls fail, and every count follows within a second.
    status_text = page.locator(f"{STATUS} .gzl-status-text")
    ex(status_text).to_contain_text("LLM 3/3")
    ex(llm.locator(".gz-cell-status.gz-row-ALL")).to_have_text("3/3 ok")
    for s in standins:
        s.down()
    try:
        run_cell(page, 5, timeout=60_000)  # %%llm against dead servers: an error
        t0 = time.monotonic()
        deadline = t0 + 5
        while "LLM 0/3" not in status_text.inner_text():
            assert time.monotonic() < deadline, status_text.inner_text()
            time.sleep(0.05)
        lag = time.monotonic() - t0
        ex(llm.locator(".gz-cell-status.gz-row-ALL")).to_have_text("0/3 ok", timeout=1_000)
        ex(
            page.locator(f"{SIDEBAR} section[data-provider='ollama'] [data-field='available']")
        ).to_contain_text("0/3 available", timeout=1_000)
        print(f"status bar followed the failed cell after {lag:.2f} s")
        assert lag <= 1.0, lag
        save_screenshot(page, "24-every-server-down")
    finally:
        for s in standins:
            s.up()
    # Back up: the hub's health checks bring every count back, no call needed.
    ex(status_text).to_contain_text("LLM 3/3", timeout=60_000)
    ex(llm.locator(".gz-cell-status.gz-row-ALL")).to_have_text("3/3 ok", timeout=5_000)
    own = [e for e in page.errors if "gleitzeit" in e.lower() or "gz-" in e]
    assert not own, own


def test_a_saved_notebook_shows_its_panels_after_a_restart_and_in_html(
    page: Any, lab: LabServer, standins: list[OllamaStandIn]
) -> None:
    ex = expect()
    path = lab.root / "saved.ipynb"
    write_notebook(
        path,
        [
            "%load_ext gleitzeit_jupyter",
            "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
            "from gleitzeit_jupyter.kernel.widgets import show_status\n"
            "from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider\n"
            "rt = get_runtime()\n"
            "pool = rt.get_or_create('memory', lambda: MemoryProvider(\n"
            "    [MemoryConfig('m0'), MemoryConfig('m1')], health_check_interval=60))\n"
            "panel = show_status(pool)",
            "for k in range(7):\n    rt.run(pool.execute('echo', {'value': k}))",
            "items = ['a', 'b', 'c']",
            "%%llm --map items\nSay {item}.",
        ],
    )
    page.goto(lab.url("/lab/tree/saved.ipynb"))
    ex(current_panel(page).locator(".jp-Cell")).to_have_count(5, timeout=90_000)
    ex(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=90_000
    )
    for i in range(5):
        run_cell(page, i, timeout=120_000)
    panel = page.locator(f"{PANEL}.gz-provider-memory")
    ex(panel.locator(".gz-cell-requests.gz-row-ALL")).to_have_text("7", timeout=15_000)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    dirty = page.locator(".lm-TabBar-tab.jp-mod-dirty", has_text="saved.ipynb")
    ex(dirty).to_have_count(0, timeout=15_000)

    saved = json.loads(path.read_text())
    html_outputs = [
        "".join(o["data"]["text/html"])  # nbformat may keep it as a list of lines
        for c in saved["cells"]
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    assert any('data-gleitzeit-static="panel"' in h for h in html_outputs)
    assert any('data-gleitzeit-static="progress"' in h for h in html_outputs)

    # Restart the kernel and reopen: no "model not found", the last state instead.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:restart-kernel'); }")
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    ex(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=90_000
    )
    page.goto(lab.url("/lab/tree/saved.ipynb"))  # reopen (the page reloads)
    ex(current_panel(page).locator(".jp-Cell")).to_have_count(5, timeout=90_000)
    fallback = current_panel(page).locator(
        "[data-gleitzeit-fallback] [data-gleitzeit-static='panel']"
    )
    ex(fallback).to_be_visible(timeout=30_000)
    ex(fallback).to_contain_text("m0")
    ex(fallback.locator("tr", has_text="ALL")).to_contain_text("7")
    progress = current_panel(page).locator("[data-gleitzeit-static='progress']")
    ex(progress).to_be_visible()
    ex(progress).to_contain_text("3/3")
    ex(current_panel(page).get_by_text("model not found")).to_have_count(0)
    shot = save_screenshot(page, "25-reopened-after-restart")
    publish_screenshot(shot, "saved-notebook-reopened.png")

    # nbconvert HTML shows the same pictures.
    out = lab.root / "saved.html"
    subprocess.run(
        [sys.executable, "-m", "nbconvert", "--to", "html", str(path), "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    html = out.read_text()
    assert 'data-gleitzeit-static="panel"' in html
    assert 'data-gleitzeit-static="progress"' in html
