"""Fixtures of the labextension tests: a real JupyterLab server, Debian Chromium through
Playwright, and Ollama stand-ins the notebook's kernel talks to."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gleitzeit_jupyter.testing.ollama import OllamaStandIn

from .lab import CHROMIUM, CHROMIUM_ARGS, LabServer


@pytest.fixture(scope="module")
def standins() -> Iterator[list[OllamaStandIn]]:
    servers = [
        OllamaStandIn(models=["llama3.2:latest"], tokens_per_s=400, default_tokens=16, seed=k)
        for k in range(2)
    ]
    for s in servers:
        s.start()
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, standins: list[OllamaStandIn]
) -> Iterator[LabServer]:
    root = tmp_path_factory.mktemp("lab")
    server = LabServer(
        root,
        env={
            "GLEITZEIT_OLLAMA_HOSTS": ",".join(s.url for s in standins),
            "GLEITZEIT_MODEL": "llama3.2",
        },
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # A missing chromium must fail the run, not skip it.
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, lab: LabServer) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def lab_root(lab: LabServer) -> Path:
    return lab.root
