"""Every ```python block of README.md and docs/*.md runs, so no example rots.

Blocks with magics (and plain cells) run as notebook cells in a real kernel, one kernel per
document, in the document's order; the README's quick start runs each block alone in a fresh
kernel (after ``%load_ext``), as a reader pastes it. Blocks that call ``asyncio.run`` run as
scripts; ``ipython_config.py`` snippets run with a stub ``get_config`` and are loaded into the
real configuration class. LLM calls go to the Ollama and OpenAI stand-ins, named to the
kernels through ``GLEITZEIT_OLLAMA_HOSTS`` / ``GLEITZEIT_OPENAI_HOSTS``; the sandbox uses the
real docker engine. A block is skipped only with a visible ``<!-- not run: why -->`` right
above it; ``<!-- expect error: Name -->`` says the block must fail with that error.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from gleitzeit_jupyter.testing.ollama import OllamaStandIn
from gleitzeit_jupyter.testing.openai import OpenAIStandIn

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*(not run|expect error):\s*(.+?)\s*-->\s*$")
MAX_OPT_OUTS = 8

# The models the examples name, with what they are asked to do.
OLLAMA_MODELS = {
    "llama3.2:latest": ["completion", "vision", "thinking", "tools", "embedding"],
    "qwen2.5:7b": ["completion", "tools"],
}
OPENAI_MODELS = ["Qwen/Qwen2.5-7B-Instruct"]


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    code: str
    marker: tuple[str, str] | None  # ("not run" | "expect error", text)

    @property
    def kind(self) -> str:
        if "asyncio.run(" in self.code:
            return "script"
        if re.search(r"^c = get_config\(\)", self.code, re.M):
            return "config"
        return "cell"

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a Markdown file (any fence length, indented in lists too)."""
    lines = path.read_text().split("\n")
    blocks: list[Block] = []
    k = 0
    while k < len(lines):
        m = FENCE.match(lines[k])
        if not m:
            k += 1
            continue
        indent, fence, info = m.groups()
        end = k + 1
        while end < len(lines):
            c = FENCE.match(lines[end])
            if c and c.group(2)[0] == fence[0] and len(c.group(2)) >= len(fence) and not c[3]:
                break
            end += 1
        if info == "python":
            prev = next((ln for ln in reversed(lines[:k]) if ln.strip()), "")
            mk = MARKER.match(prev)
            body = "\n".join(
                ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[k + 1 : end]
            )
            rel = str(path.relative_to(ROOT))
            blocks.append(
                Block(rel, k + 1, textwrap.dedent(body) + "\n", mk.groups() if mk else None)
            )
        k = end + 1
    return blocks


def quick_start(blocks: list[Block]) -> list[Block]:
    text = README.read_text().split("\n")
    start = text.index("## Quick start")
    stop = next(i for i in range(start + 1, len(text)) if text[i].startswith("## "))
    return [b for b in blocks if start < b.line < stop]


# ---------------------------------------------------------------------------------- stand-ins
@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    with (
        OllamaStandIn(
            models=list(OLLAMA_MODELS), capabilities=OLLAMA_MODELS, tokens_per_s=400
        ) as ol,
        OpenAIStandIn(models=OPENAI_MODELS, tokens_per_s=400) as oa,
    ):
        yield {
            "GLEITZEIT_OLLAMA_HOSTS": ol.url,
            "GLEITZEIT_OPENAI_HOSTS": oa.url,
            "OLLAMA_HOST": ol.url,
            "GLEITZEIT_MODEL": "llama3.2",
            "MPLBACKEND": "Agg",
        }


def _env(servers: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **servers}


class Kernel:
    """One real kernel driven cell by cell, as a notebook front end does."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.nb = nbformat.v4.new_notebook()
        self.env = env
        self.client = NotebookClient(
            self.nb,
            timeout=180,
            kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )

    async def __aenter__(self) -> Kernel:
        self.client.km = self.client.create_kernel_manager()
        await self.client.async_start_new_kernel(env=self.env)
        await self.client.async_start_new_kernel_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client._async_cleanup_kernel()

    async def run(self, source: str) -> tuple[str | None, str]:
        """Run a cell; return (the error's name or None, the error's text)."""
        node = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(node)
        try:
            await self.client.async_execute_cell(node, len(self.nb.cells) - 1)
        except CellExecutionError as exc:
            return exc.ename, str(exc)
        return None, ""


def _check(block: Block, ename: str | None, text: str) -> None:
    if block.marker and block.marker[0] == "expect error":
        # The magics' one-line errors name their kind ("Timeout: ...") on a CellError.
        expected = block.marker[1]
        plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
        seen = ename == expected or re.search(rf"(?<!\w){expected}:", plain)
        assert ename and seen, f"{block}: expected {expected}, got {ename}: {text[-500:]}"
    else:
        assert ename is None, f"{block} failed:\n{block.code}\n{text[-3000:]}"


def _run_script(block: Block, workdir: Path, env: dict[str, str]) -> None:
    script = workdir / f"example_{block.line}.py"
    script.write_text(block.code)
    out = subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    _check(block, None if out.returncode == 0 else "exit", out.stderr)


def _run_config(block: Block) -> None:
    """An ipython_config.py snippet: run with a stub get_config, then load into Gleitzeit."""
    from traitlets.config import Config

    from gleitzeit_jupyter.kernel.config import Gleitzeit

    ns: dict[str, object] = {"get_config": Config}
    exec(compile(block.code, str(block), "exec"), ns)
    cfg = ns["c"]
    assert isinstance(cfg, Config)
    loaded = Gleitzeit(config=cfg)  # a value of the wrong type raises here
    for name, value in cfg.Gleitzeit.items():
        assert name in loaded.trait_names(), f"{block}: Gleitzeit has no setting {name!r}"
        assert getattr(loaded, name) == value, name


async def _run_doc(blocks: list[Block], workdir: Path, env: dict[str, str]) -> int:
    ran = 0
    kernel: Kernel | None = None
    try:
        for block in blocks:
            if block.marker and block.marker[0] == "not run":
                continue
            if block.kind == "script":
                _run_script(block, workdir, env)
            elif block.kind == "config":
                _run_config(block)
            else:
                if kernel is None:  # started on the first cell: script-only docs need none
                    kernel = await Kernel(workdir, env).__aenter__()
                _check(block, *await kernel.run(block.code))
            ran += 1
    finally:
        if kernel is not None:
            await kernel.__aexit__()
    return ran


# ---------------------------------------------------------------------------------- the tests
def test_examples_are_found_and_opt_outs_are_few_and_visible() -> None:
    blocks = [b for path in [README, *DOCS] for b in python_blocks(path)]
    skipped = [b for b in blocks if b.marker and b.marker[0] == "not run"]
    print(f"\n{len(blocks)} python blocks, {len(skipped)} not run:")
    for b in skipped:
        print(f"  {b}: {b.marker[1]}")
    assert len(blocks) >= 60
    assert len(skipped) <= MAX_OPT_OUTS, [str(b) for b in skipped]
    assert all(b.marker[1] for b in skipped)
    kinds = {b.kind for b in blocks}
    assert kinds == {"cell", "script", "config"}, kinds


@pytest.mark.docker
@pytest.mark.slow
def test_readme_quick_start_blocks_each_run_alone(servers: dict[str, str], tmp_path: Path) -> None:
    blocks = quick_start(python_blocks(README))
    assert blocks[0].code.strip() == "%load_ext gleitzeit_jupyter"
    sources = "".join(b.code for b in blocks)
    for needed in (
        "%%llm",
        "--map",
        "--schema",
        "%%sandbox",
        "--tools sandbox",
        "%gleitzeit status",
    ):
        assert needed in sources, needed
    assert not any(b.marker for b in blocks), "every quick-start block must run"

    async def each() -> None:
        for block in blocks:
            async with Kernel(tmp_path, _env(servers)) as kernel:
                if block is not blocks[0]:
                    assert (await kernel.run(blocks[0].code))[0] is None
                _check(block, *await kernel.run(block.code))

    asyncio.run(each())


def test_readme_has_no_examples_outside_the_quick_start() -> None:
    blocks = python_blocks(README)
    assert blocks == quick_start(blocks)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_examples_run_in_order(doc: Path, servers: dict[str, str], tmp_path: Path) -> None:
    blocks = python_blocks(doc)
    ran = asyncio.run(_run_doc(blocks, tmp_path, _env(servers)))
    print(f"\n{doc.name}: {ran} of {len(blocks)} blocks ran")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_point_to_files_and_headings_that_exist() -> None:
    anchors: dict[Path, set[str]] = {}
    for path in [README, *DOCS]:
        text = re.sub(r"^(`{3,}|~{3,}).*?^\1\s*$", "", path.read_text(), flags=re.S | re.M)
        anchors[path] = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    broken = []
    for path in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)|src=\"([^\"]+)\"", path.read_text()):
            target = next(t for t in target if t)
            if re.match(r"https?:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists() or (anchor and anchor not in anchors.get(dest, set())):
                broken.append(f"{path.name}: {target}")
    assert not broken, broken
