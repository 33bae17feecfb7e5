"""The status panel live in a real JupyterLab, in headless Chromium.

The browser's widget manager renders the panel; while a cell keeps the notebook thread busy
with a batch, the request counter shown in the page must still climb (updates sent from the
runtime's loop thread reach the front end), and the drain button must work from the page.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]


def _lab_module():
    name = "gz_lab_helpers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "labextension" / "lab.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SETUP = """\
import asyncio
from gleitzeit_jupyter.kernel.runtime import get_runtime
from gleitzeit_jupyter.kernel.widgets import show_status
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider
rt = get_runtime()
pool = rt.get_or_create("memory", lambda: MemoryProvider(
    [MemoryConfig("a", latency=0.01), MemoryConfig("b", latency=0.02)], health_check_interval=1))
async def sequential(n, latency):
    for _ in range(n):
        await pool.execute("e", {"latency": latency})
"""


def _requests(page: Any) -> int:
    text = page.locator(".gz-panel .gz-cell-requests.gz-row-ALL").inner_text().strip()
    return int(text.replace(",", "") or 0)


def test_panel_is_live_in_jupyterlab(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    lab_mod = _lab_module()
    lab_mod.write_notebook(
        tmp_path / "panel.ipynb",
        [SETUP, "panel = show_status(pool)", "rt.run(sequential(250, 0.02))", "1 + 1"],
    )
    lab = lab_mod.LabServer(tmp_path).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=lab_mod.CHROMIUM, headless=True, args=lab_mod.CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.goto(lab.url("/lab/tree/panel.ipynb"))
                cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
                expect(cells).to_have_count(4, timeout=120_000)
                # wait for the kernel, then run the set-up and the panel cells
                expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
                    "data-status", "idle", timeout=120_000
                )

                def run(index: int, wait: bool = True) -> None:
                    cells.nth(index).locator(".jp-InputArea-editor").click()
                    page.keyboard.press("Shift+Enter")
                    if wait:
                        expect(cells.nth(index).locator(".jp-InputPrompt")).to_have_text(
                            re.compile(r"\[\d+\]"), timeout=60_000
                        )

                run(0)
                run(1)
                panel = page.locator(".gz-panel")
                expect(panel).to_be_visible(timeout=30_000)
                expect(panel.locator(".gz-cell-instance.gz-inst")).to_have_text(["a", "b"])
                expect(panel.locator(".gz-cell-status.gz-row-a")).to_have_text("healthy")

                # A ~5 s batch keeps the notebook thread busy; the page must keep counting.
                start = _requests(page)
                run(2, wait=False)
                prompt = cells.nth(2).locator(".jp-InputPrompt")
                seen: list[int] = []
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    busy = "*" in prompt.inner_text()
                    value = _requests(page)
                    if busy and (not seen or value != seen[-1]):
                        seen.append(value)
                    if not busy and seen:
                        break
                    time.sleep(0.1)
                mid = [v for v in seen if start < v < start + 250]
                assert len(mid) >= 3, seen  # climbing about once a second while running
                assert mid == sorted(mid)
                expect(panel.locator(".gz-cell-requests.gz-row-ALL")).to_have_text(
                    f"{start + 250:,}", timeout=10_000
                )
                lab_mod.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                shot = lab_mod.SCREENSHOTS / "status-panel-lab.png"
                panel.screenshot(path=str(shot))
                lab_mod.publish_screenshot(shot, "status-panel-lab.png")  # opt-in, see lab.py

                # The drain button, clicked in the page, drains the instance in the kernel.
                panel.locator(".gz-drain.gz-row-a").click()
                expect(panel.locator(".gz-cell-status.gz-row-a")).to_have_text(
                    "drained", timeout=10_000
                )
                expect(panel.locator(".gz-drain.gz-row-a")).to_have_text("enable")
                panel.locator(".gz-drain.gz-row-a").click()
                expect(panel.locator(".gz-cell-status.gz-row-a")).to_have_text(
                    "healthy", timeout=10_000
                )
                errors = [e for e in getattr(page, "errors", []) if "gz-" in str(e)]
                assert not errors, errors
            finally:
                browser.close()
    finally:
        lab.stop()
