"""The sidebar and the status-bar item in a real JupyterLab, in headless Chromium.

A notebook loads the extension and runs %%llm cells against two Ollama stand-ins; the sidebar
must show both instances live, the request counter must rise, and stopping one stand-in must
turn its row and the status bar unhealthy within seconds. Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

from .lab import LabServer, publish_screenshot, save_screenshot, write_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

SIDEBAR = "#gleitzeit-sidebar"
STATUS = "#gleitzeit-status"


def expect():
    from playwright.sync_api import expect as _expect

    return _expect


def current_panel(page: Any) -> Any:
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")


def run_cell(page: Any, index: int, timeout: float = 60_000) -> None:
    cell = current_panel(page).locator(".jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    expect()(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"), timeout=timeout)


def open_file(page: Any, path: str) -> None:
    page.evaluate("path => window.jupyterapp.commands.execute('docmanager:open', {path})", path)


def cards(page: Any) -> Any:
    return page.locator(f"{SIDEBAR} section[data-provider='ollama'] li.gzl-instance")


def card_for(page: Any, srv: OllamaStandIn) -> Any:
    endpoint = page.locator(".gzl-endpoint", has_text=re.compile(rf":{srv.port}/?$"))
    return cards(page).filter(has=endpoint)


def total_requests(page: Any) -> int:
    texts = page.locator(
        f"{SIDEBAR} section[data-provider='ollama'] [data-field='requests']"
    ).all_inner_texts()
    return sum(int(t) for t in texts)


def widen_right_panel(page: Any, pixels: int) -> None:
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle:visible").last
    box = handle.bounding_box()
    if box:
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x - pixels, y, steps=5)
        page.mouse.up()


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.2)


def test_sidebar_and_status_bar_follow_the_kernel(
    page: Any, lab: LabServer, standins: list[OllamaStandIn]
) -> None:
    ex = expect()
    write_notebook(
        lab.root / "gleitzeit.ipynb",
        [
            "%load_ext gleitzeit_jupyter",
            "%%llm\nSay hello in five words.",
            "%%llm\nAnd once more, in French.",
        ],
    )
    write_notebook(lab.root / "plain.ipynb", ["1 + 1"])

    page.goto(lab.url("/lab/tree/gleitzeit.ipynb"))
    status = page.locator(STATUS)
    sidebar = page.locator(SIDEBAR)
    # the kernel answers the comm with "no such target": the status item says so
    ex(status).to_have_attribute("data-state", "not-loaded", timeout=90_000)
    ex(sidebar).to_be_hidden()

    # clicking the status-bar item opens the sidebar, which shows the one-line hint
    status.click()
    ex(sidebar).to_be_visible()
    ex(sidebar.locator(".gzl-body")).to_have_attribute("data-state", "not-loaded")
    ex(sidebar.locator("code.gzl-load-hint")).to_have_text("%load_ext gleitzeit_jupyter")
    widen_right_panel(page, 110)  # cosmetic: roomier screenshots
    save_screenshot(page, "01-not-loaded")

    # loading the extension later switches the view to live (the kernel announces itself)
    run_cell(page, 0)
    ex(sidebar.locator(".gzl-body")).to_have_attribute("data-state", "live", timeout=15_000)
    ex(status).to_have_attribute("data-state", "live")

    # a %%llm cell against the stand-ins: both instances appear, healthy, with a request
    run_cell(page, 1)
    ex(cards(page)).to_have_count(2, timeout=15_000)
    for srv in standins:
        ex(card_for(page, srv)).to_have_attribute("data-health", "healthy", timeout=15_000)
        ex(card_for(page, srv).locator(".gzl-endpoint")).to_contain_text(f"127.0.0.1:{srv.port}")
    wait_until(lambda: total_requests(page) >= 1, 10, "the first request never showed up")
    ex(status.locator(".gzl-status-text")).to_have_text("LLM 2/2")
    ex(status).to_have_attribute("data-level", "ok")
    latency = sidebar.locator("[data-field='p50_ms']").all_inner_texts()
    assert any(t.endswith("ms") or t.endswith("s") for t in latency), latency
    save_screenshot(page, "02-live")

    # the counter rises after another cell, pushed by the kernel (nothing is clicked)
    before = total_requests(page)
    run_cell(page, 2)
    wait_until(lambda: total_requests(page) > before, 10, "the request counter did not rise")

    # stop one stand-in: its row and the status bar turn unhealthy within seconds
    down, up = standins[1], standins[0]
    down.down()
    try:
        t0 = time.monotonic()
        ex(card_for(page, down)).not_to_have_attribute("data-health", "healthy", timeout=12_000)
        ex(status).to_have_attribute("data-level", re.compile("warn|error"), timeout=5_000)
        noticed = time.monotonic() - t0
        ex(card_for(page, down)).to_have_attribute("data-health", "unhealthy", timeout=30_000)
        ex(status.locator(".gzl-status-text")).to_have_text("LLM 1/2", timeout=5_000)
        ex(card_for(page, up)).to_have_attribute("data-health", "healthy")
        shot = save_screenshot(page, "03-one-instance-down")
        publish_screenshot(shot, "labextension-sidebar.png")
        assert noticed < 12, noticed

        # actions: drain the healthy instance, then enable it again
        card_for(page, up).locator("button[data-action='drain']").click()
        ex(card_for(page, up)).to_have_attribute("data-status", "drained", timeout=10_000)
        ex(status.locator(".gzl-status-text")).to_have_text("LLM 0/2", timeout=5_000)
        ex(status).to_have_attribute("data-level", "error")
        ex(sidebar.locator("[data-field='message']")).to_contain_text("drain")
        card_for(page, up).locator("button[data-action='enable']").click()
        ex(card_for(page, up)).to_have_attribute("data-status", "healthy", timeout=10_000)
        ex(status.locator(".gzl-status-text")).to_have_text("LLM 1/2", timeout=5_000)

        # the strategy selector: the re-rendered snapshot comes back with the new strategy
        select = sidebar.locator("section[data-provider='ollama'] select.gzl-strategy")
        select.select_option("round_robin")
        ex(select.locator("option[value='round_robin'][selected]")).to_have_count(1, timeout=10_000)
        ex(sidebar.locator("[data-field='message']")).to_contain_text("strategy")
    finally:
        down.up()

    # switching notebooks switches the view: a kernel without the extension shows the hint
    open_file(page, "plain.ipynb")
    ex(sidebar.locator(".gzl-notebook")).to_have_text("plain.ipynb", timeout=30_000)
    ex(sidebar.locator(".gzl-body")).to_have_attribute("data-state", "not-loaded", timeout=60_000)
    ex(status).to_have_attribute("data-state", "not-loaded")
    save_screenshot(page, "04-other-notebook")
    open_file(page, "gleitzeit.ipynb")
    ex(sidebar.locator(".gzl-notebook")).to_have_text("gleitzeit.ipynb")
    ex(sidebar.locator(".gzl-body")).to_have_attribute("data-state", "live")
    ex(cards(page)).to_have_count(2)

    # after a kernel restart the extension is gone: hint again, live again once reloaded
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:restart-kernel'); }")
    page.locator(".jp-Dialog button.jp-mod-accept").click()
    ex(sidebar.locator(".gzl-body")).to_have_attribute("data-state", "not-loaded", timeout=60_000)
    run_cell(page, 0)
    ex(sidebar.locator(".gzl-body")).to_have_attribute("data-state", "live", timeout=30_000)

    own_errors = [e for e in page.errors if "gleitzeit" in e.lower()]
    assert not own_errors, own_errors
