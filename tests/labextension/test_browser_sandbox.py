"""Hostile %%sandbox output in a real JupyterLab, in headless Chromium: no script runs.

JupyterLab renders the running kernel's outputs as trusted, so markup from the sandbox would
run its scripts with the user's login. Each hostile cell tries to set ``window.gzPwned``; a
local control cell sets ``window.gzControl`` the same way, which shows that the marker works.
A DataFrame must still show as a table and a matplotlib figure as an image.
"""

from __future__ import annotations

from typing import Any

import pytest

from .lab import LabServer, save_screenshot, write_notebook
from .test_browser import expect, run_cell

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

HTML_CELL = (
    "%%sandbox\n"
    "class H:\n"
    "    def _repr_html_(self):\n"
    "        return ('<b id=\"gz-html\">html</b>'\n"
    "                '<script>window.gzPwned = \"script\"</script>'\n"
    "                '<img src=\"x\" onerror=\"window.gzPwned = \\'img\\'\">'\n"
    "                '<svg><image href=\"x\"'\n"
    "                ' onerror=\"window.gzPwned = \\'svg-in-html\\'\"/></svg>'\n"
    '                \'<a id="gz-js-link" href="javascript:window.gzPwned=1">link</a>\'\n'
    "                '<iframe srcdoc=\"<script>parent.gzPwned = 1</script>\"></iframe>')\n"
    "H()"
)
MARKDOWN_CELL = (
    "%%sandbox\n"
    "class M:\n"
    "    def _repr_markdown_(self):\n"
    "        return ('# gz-markdown\\n\\n'\n"
    "                '<img src=\"x\" onerror=\"window.gzPwned = \\'md\\'\">\\n\\n'\n"
    "                '[click](javascript:window.gzPwned=1)')\n"
    "M()"
)
SVG_CELL = (
    "%%sandbox\n"
    "class S:\n"
    "    def _repr_svg_(self):\n"
    '        return (\'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"\'\n'
    "                ' onload=\"window.gzPwned = \\'svg\\'\">'\n"
    "                '<script>window.gzPwned = \"svg-script\"</script>'\n"
    '                \'<rect width="20" height="20" fill="green"/></svg>\')\n'
    "S()"
)
TABLE_AND_FIGURE_CELL = (
    "%%sandbox\n"
    "import pandas as pd\n"
    "import matplotlib.pyplot as plt\n"
    "display(pd.DataFrame({'gzcol': [1, 2, 3]}))\n"
    "plt.plot([1, 3, 2])\n"
)
CONTROL_CELL = (
    'from IPython.display import HTML\nHTML(\'<img src="x" onerror="window.gzControl = 1">\')'
)


def _marker(page: Any, name: str) -> Any:
    return page.evaluate(f"() => window.{name} === undefined ? null : window.{name}")


def test_hostile_sandbox_output_runs_no_script_but_tables_and_figures_show(
    page: Any, lab: LabServer
) -> None:
    ex = expect()
    cells = [
        "%load_ext gleitzeit_jupyter",
        HTML_CELL,
        MARKDOWN_CELL,
        SVG_CELL,
        TABLE_AND_FIGURE_CELL,
        CONTROL_CELL,
    ]
    write_notebook(lab.root / "hostile.ipynb", cells)
    page.goto(lab.url("/lab/tree/hostile.ipynb"))
    panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    ex(panel.locator(".jp-Cell")).to_have_count(len(cells), timeout=90_000)
    ex(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(
        1, timeout=90_000
    )
    for i in range(len(cells)):
        run_cell(page, i, timeout=120_000)
    outputs = panel.locator(".jp-OutputArea-output")

    # the control: a trusted output from the kernel itself does run its handler
    page.wait_for_function("() => window.gzControl === 1", timeout=15_000)

    # the sandbox's markup arrived (sanitised) and rendered ...
    ex(outputs.locator("#gz-html, b:text('html')").first).to_be_visible(timeout=15_000)
    ex(outputs.locator("h1:text('gz-markdown')")).to_be_visible()
    # ... but none of its scripts, handlers, frames or javascript: links made it
    page.wait_for_timeout(1500)  # give any handler time to fire
    assert _marker(page, "gzPwned") is None
    for i in range(1, 5):  # the sandbox cells (the control's own handler is expected)
        sandboxed = panel.locator(".jp-Cell").nth(i).locator(".jp-OutputArea-output")
        assert sandboxed.locator("script, iframe, [onerror], [onload]").count() == 0
        assert sandboxed.locator("a[href^='javascript']").count() == 0

    # a DataFrame still shows as a table, a figure as an image
    ex(outputs.locator("table th:text('gzcol')")).to_be_visible()
    ex(outputs.locator("img[src^='data:image/png']")).to_be_visible()
    save_screenshot(page, "10-sandbox-hostile-output")
    assert _marker(page, "gzPwned") is None
