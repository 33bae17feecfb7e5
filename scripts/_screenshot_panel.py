"""Screenshot the status panel as a browser renders it, into docs/img/status-panel.png.

    .venv/bin/python scripts/_screenshot_panel.py [--html build/quickstart.html] [--out PNG]

Opens the executed quickstart page (``scripts/_demo_notebook.py`` writes it) in headless
Chromium; the page's widget renderer (@jupyter-widgets/html-manager) draws the panel from the
widget state saved in the notebook, and the screenshot is cropped to the panel. The renderer
and require.js normally come from public CDNs; here they are served from npm packages fetched
once into build/vendor (``npm pack``), so no other network access is needed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "build" / "vendor"
PACKAGES = {"html-manager": "@jupyter-widgets/html-manager@1", "requirejs": "requirejs@2.3.7"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def vendor() -> dict[str, Path]:
    """Unpacked npm packages: {"html-manager": dir, "requirejs": dir}."""
    out = {}
    for name, spec in PACKAGES.items():
        target = VENDOR / name
        if not (target / "package.json").exists():
            VENDOR.mkdir(parents=True, exist_ok=True)
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit("screenshot: npm is needed once to fetch " + spec)
            res = subprocess.run(
                [npm, "pack", spec, "--pack-destination", str(VENDOR), "--silent"],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            tgz = VENDOR / res.stdout.strip().splitlines()[-1]
            shutil.rmtree(target, ignore_errors=True)
            with tarfile.open(tgz) as tar:
                tar.extractall(VENDOR / f".{name}", filter="data")
            (VENDOR / f".{name}" / "package").rename(target)
            shutil.rmtree(VENDOR / f".{name}", ignore_errors=True)
            tgz.unlink()
        out[name] = target
    return out


def chromium_path() -> str:
    return os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


def render(html: Path, out: Path, selector: str = ".gz-board", timeout_ms: int = 60_000) -> Path:
    from playwright.sync_api import sync_playwright

    pkgs = vendor()
    manager_dist = pkgs["html-manager"] / "dist"
    requirejs = pkgs["requirejs"] / "require.js"

    def route(r):
        url = r.request.url
        m = re.search(r"@jupyter-widgets/html-manager@[^/]*/dist/(.+)$", url)
        if m and (manager_dist / m.group(1)).is_file():
            return r.fulfill(path=str(manager_dist / m.group(1)))
        if re.search(r"require(\.min)?\.js$", url):
            return r.fulfill(path=str(requirejs), content_type="application/javascript")
        if url.startswith("file://"):
            return r.continue_()
        return r.abort()  # nothing else leaves the machine

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
            page.route("**/*", route)
            page.goto(html.resolve().as_uri())
            panel = page.locator(selector).first
            panel.wait_for(state="visible", timeout=timeout_ms)
            page.locator(f"{selector} .gz-cell-requests").first.wait_for(timeout=timeout_ms)
            page.wait_for_timeout(300)  # let the grid settle its layout
            out.parent.mkdir(parents=True, exist_ok=True)
            panel.screenshot(path=str(out))
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "build" / "quickstart.html")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "status-panel.png")
    parser.add_argument("--selector", default=".gz-board")
    args = parser.parse_args(argv)
    if not args.html.exists():
        print(
            f"screenshot: {args.html} is missing; run scripts/_demo_notebook.py first",
            file=sys.stderr,
        )
        return 1
    out = render(args.html, args.out, args.selector)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
