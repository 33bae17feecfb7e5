"""Text a stranger chose, shown by the panels in a real JupyterLab in headless Chromium.

A notebook from an untrusted source may carry any ``text/html`` beside a widget view, marked
as a Gleitzeit static picture: it must go through JupyterLab's sanitizer like any untrusted
output (no script, no event handler runs). A server's error text that looks like TeX shows as
the text it is, not typeset as math.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .lab import LabServer, save_screenshot, write_notebook
from .test_browser import current_panel, expect

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

HOSTILE_PICTURE = (
    '<div data-gleitzeit-static="panel"><b>pool picture</b>'
    '<img src="x" onerror="window.__gzPwned = 1">'
    "<script>window.__gzPwned2 = 1</script>"
    '<a href="javascript:window.__gzPwned3 = 1" id="gz-hostile-link">link</a></div>'
)


def _open(page: Any, lab: LabServer, name: str) -> None:
    # ?reset: a fresh workspace, so notebooks of earlier tests do not come back as tabs
    page.goto(lab.url(f"/lab/tree/{name}?reset"))
    expect()(current_panel(page).locator(".jp-Cell").first).to_be_visible(timeout=90_000)


def _run_first_cell(page: Any) -> None:
    """Shift+Enter on the first cell, again while its prompt stays empty (a key sent while
    the page still settles can be lost)."""
    cell = current_panel(page).locator(".jp-Cell").first
    prompt = cell.locator(".jp-InputPrompt")
    for _attempt in range(4):
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        deadline = time.monotonic() + 10
        while prompt.inner_text().strip() in ("[ ]:", "") and time.monotonic() < deadline:
            time.sleep(0.2)
        if prompt.inner_text().strip() not in ("[ ]:", ""):
            return
    save_screenshot(page, "run-first-cell-lost")


def test_an_untrusted_notebooks_static_picture_is_sanitized(page: Any, lab: LabServer) -> None:
    path = lab.root / "untrusted.ipynb"
    write_notebook(path, ["panel"])
    nb = json.loads(path.read_text())
    nb["cells"][0]["outputs"] = [
        {
            "output_type": "display_data",
            "metadata": {},
            "data": {
                "application/vnd.jupyter.widget-view+json": {
                    "version_major": 2,
                    "version_minor": 0,
                    "model_id": "0123456789abcdef0123456789abcdef",
                },
                "text/html": HOSTILE_PICTURE,
                "text/plain": "<StatusPanel>",
            },
        }
    ]
    path.write_text(json.dumps(nb))  # no signature: JupyterLab does not trust it
    _open(page, lab, "untrusted.ipynb")
    picture = current_panel(page).get_by_text("pool picture")
    expect()(picture).to_be_visible(timeout=30_000)
    link = current_panel(page).locator("a", has_text="link")
    if link.count():
        link.first.click()
    time.sleep(1.0)
    pwned = page.evaluate("() => [window.__gzPwned, window.__gzPwned2, window.__gzPwned3]")
    assert pwned == [None, None, None], pwned
    handlers = page.evaluate(
        "() => [...document.querySelectorAll('.jp-OutputArea [onerror], .jp-OutputArea script')]"
        ".length"
    )
    assert handlers == 0
    save_screenshot(page, "40-untrusted-static-picture")


def test_tex_in_an_error_is_shown_as_text(page: Any, lab: LabServer) -> None:
    error = "bad price $x^2$ and $\\frac{a}{b}$ from the server"
    write_notebook(
        lab.root / "tex.ipynb",
        [
            "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
            "from gleitzeit_jupyter.kernel.widgets import show_status\n"
            "from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider\n"
            "rt = get_runtime()\n"
            "pool = rt.get_or_create('texpool', lambda: MemoryProvider(\n"
            "    [MemoryConfig('$a$'), MemoryConfig('$b$')], health_check_interval=60))\n"
            "for inst in pool.instances:\n"
            f"    inst.metrics.record(5.0, False, error={error!r})\n"
            "panel = show_status(pool)",
        ],
    )
    _open(page, lab, "tex.ipynb")
    ex = expect()
    ex(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=90_000
    )
    _run_first_cell(page)
    panel = current_panel(page).locator(".gz-panel")
    ex(panel.locator(".gz-cell-last_error").first).to_contain_text("bad price", timeout=120_000)
    time.sleep(2.0)  # typesetting is asynchronous
    save_screenshot(page, "41-tex-in-an-error")
    assert panel.locator("mjx-container, .MathJax").count() == 0
    ex(panel.locator(".gz-cell-last_error").first).to_contain_text("$x^2$")
    ex(panel.locator(".gz-cell-instance").first).to_contain_text("$a$")


def test_a_very_long_name_wraps_and_keeps_the_buttons_in(page: Any, lab: LabServer) -> None:
    """One instance (nothing shared to shorten) with a very long endpoint: the name wraps,
    nothing is clipped, and the buttons stay inside the panel, with the sidebar open too."""
    from .test_browser_truth import _buttons_inside, _overflowing

    long = "http://" + "very-long-host-name-" * 6 + "gpu.cluster.example.com:11434/v1"
    write_notebook(
        lab.root / "long.ipynb",
        [
            "from gleitzeit_jupyter.kernel.runtime import get_runtime\n"
            "from gleitzeit_jupyter.kernel.widgets import show_status\n"
            "from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider\n"
            "rt = get_runtime()\n"
            "pool = rt.get_or_create('longpool', lambda: MemoryProvider(\n"
            f"    [MemoryConfig({long!r})], health_check_interval=60))\n"
            "panel = show_status(pool)",
        ],
    )
    _open(page, lab, "long.ipynb")
    ex = expect()
    ex(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=90_000
    )
    _run_first_cell(page)
    panel = current_panel(page).locator(".gz-panel")
    ex(panel.locator(".gz-cell-instance").first).to_contain_text("gpu.cluster", timeout=120_000)
    for width in (1440, 900):
        page.set_viewport_size({"width": width, "height": 900})
        time.sleep(1.0)
        save_screenshot(page, f"42-long-name-{width}")
        assert not _overflowing(page, ".gz-panel .gz-grid"), width
        assert not _overflowing(page, ".gz-panel .gz-cell-instance"), width
        assert not _buttons_inside(page), (width, _buttons_inside(page))
