"""Execute notebooks/quickstart.ipynb headless (nbclient) and write build/quickstart.html.

    .venv/bin/python scripts/_demo_notebook.py            # run, write build/quickstart.{ipynb,html}
    .venv/bin/python scripts/_demo_notebook.py --lab      # also print how to open it in JupyterLab
    .venv/bin/python scripts/_demo_notebook.py --offline  # the page needs no CDN (npm once)

The notebook runs in a fresh kernel with build/ as its working directory (its save file lands
there). Widget state (the status panel) is stored in the executed notebook, so the HTML page
renders the panel as it was at the end of the run. Exit status 1 when a cell fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _offline_urls(out_dir: Path) -> dict[str, str]:
    """Widget renderer and require.js from npm packages in build/vendor (fetched once with
    ``npm pack``), referenced relative to the page, so it renders without a CDN."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _screenshot_panel import vendor

    pkgs = vendor()
    rel = {k: os.path.relpath(v, out_dir) for k, v in pkgs.items()}
    return {
        "widget_renderer_url": f"{rel['html-manager']}/dist/embed-amd.js",
        "require_js_url": f"{rel['requirejs']}/require.js",
    }


def run(notebook: Path, out_dir: Path, timeout: int, offline: bool = False) -> tuple[Path, Path]:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook, as_version=4)
    out_dir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(out_dir)}},
        store_widget_state=True,
    )
    started = time.monotonic()
    executed = out_dir / f"{notebook.stem}.ipynb"
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(nb, executed)
        print(f"demo: a cell failed; partial notebook in {executed}\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None
    nbformat.write(nb, executed)
    urls = _offline_urls(out_dir) if offline else {}
    body, _ = HTMLExporter(template_name="lab", **urls).from_notebook_node(nb)
    html = out_dir / f"{notebook.stem}.html"
    html.write_text(body, encoding="utf-8")
    print(f"demo: executed {notebook.relative_to(ROOT)} in {time.monotonic() - started:.1f} s")
    return executed, html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=ROOT / "notebooks" / "quickstart.ipynb")
    parser.add_argument("--out", type=Path, default=ROOT / "build")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    parser.add_argument("--lab", action="store_true", help="print how to start JupyterLab on it")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="serve the page's widget renderer from build/vendor (npm pack, once) instead of"
        " a CDN, so the HTML renders the panel without network access",
    )
    args = parser.parse_args(argv)

    executed, html = run(args.notebook.resolve(), args.out.resolve(), args.timeout, args.offline)
    print(f"demo: HTML      {html}")
    print(f"       open it: file://{html}")
    print(f"demo: notebook  {executed} (with outputs and widget state)")
    jupyter = Path(sys.executable).with_name("jupyter")
    lab = f"{shlex.quote(str(jupyter))} lab {shlex.quote(str(args.notebook.resolve()))}"
    if args.lab:
        print("demo: to run it live in JupyterLab (the status panel updates there):")
        print(f"       {lab}")
        print(
            "       headless / remote: add --no-browser --ip 127.0.0.1 --port 8888 and open"
            " the printed URL"
        )
    else:
        print(f"demo: live in JupyterLab: {lab}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
