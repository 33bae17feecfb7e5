"""%%llm --image with paths that are not ordinary image files: devices, pipes, huge files.

Each is refused with one line before any call; none may block the kernel or read without
bound (``/dev/zero`` never ends, a pipe blocks until a writer comes)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel import ImageError
from gleitzeit_jupyter.kernel.llm_images import MAX_IMAGE_BYTES
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


@pytest.fixture
def vision(shell: InteractiveShell) -> Iterator[OllamaStandIn]:
    with OllamaStandIn(
        models=["gemma3:latest"],
        capabilities={"gemma3:latest": ["completion", "vision"]},
        tokens_per_s=500,
    ) as s:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{s.url}']")
        shell.run_cell("%config Gleitzeit.default_model = 'gemma3'")
        yield s
    shell.run_cell("%config Gleitzeit.default_model = 'llama3.2'")


def sent(srv: OllamaStandIn) -> list[list[str]]:
    return [r.body["images"] for r in srv.requests_to("/api/generate") if "images" in r.body]


def refused(shell: InteractiveShell, spec: str, message: str) -> None:
    cell = run(shell, f"%%llm --image {spec}\nWhat is it")
    assert isinstance(cell.error, ImageError) and isinstance(cell.error, UserError), cell.text
    line = cell.text.strip()
    assert message in line and "\n" not in line and "Traceback" not in line, line


@pytest.mark.timeout(60)
def test_devices_and_pipes_are_refused_without_reading(
    shell: InteractiveShell, vision: OllamaStandIn, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    refused(shell, "/dev/zero", "'/dev/zero' is not a regular file")
    refused(shell, str(fifo), "pipe.png' is not a regular file")
    refused(shell, str(link), "zero.png' is not a regular file")
    assert sent(vision) == []


@pytest.mark.timeout(60)
def test_a_file_over_the_limit_is_refused_before_it_is_read(
    shell: InteractiveShell, vision: OllamaStandIn, tmp_path: Path
) -> None:
    huge = tmp_path / "scan.png"
    with huge.open("wb") as f:
        f.truncate(2 * 1024**3)  # sparse: 2 GB long, nothing on disk
    refused(shell, str(huge), "scan.png is 2048.0 MB; the limit is")
    shell.user_ns["blob"] = PNG + b"\x00" * MAX_IMAGE_BYTES
    refused(shell, "blob", "--image blob is 20.0 MB; the limit is 20 MB")
    assert sent(vision) == []


def test_a_symlink_to_an_image_and_a_file_at_the_limit_are_sent(
    shell: InteractiveShell, vision: OllamaStandIn, tmp_path: Path
) -> None:
    real = tmp_path / "real.png"
    real.write_bytes(PNG)
    link = tmp_path / "link.png"
    link.symlink_to(real)
    cell = run(shell, f"%%llm --image {link}\nWhat is it")
    assert cell.error is None, cell.text
    assert sent(vision) == [[base64.b64encode(PNG).decode()]]


def test_base64_text_and_data_urls_are_images_like_the_ollama_client_takes(
    shell: InteractiveShell, vision: OllamaStandIn
) -> None:
    photo = PNG + bytes(range(256)) * 4
    text = base64.b64encode(photo).decode()
    shell.user_ns.update(as_text=text, as_url="data:image/png;base64," + text)
    for name in ["as_text", "as_url"]:
        cell = run(shell, f"%%llm --image {name}\nWhat is it")
        assert cell.error is None, cell.text
    assert sent(vision) == [[text], [text]]


def test_a_long_string_that_is_no_file_is_named_briefly(
    shell: InteractiveShell, vision: OllamaStandIn
) -> None:
    shell.user_ns["notes"] = "this is not a path, nor an image; " * 30_000
    cell = run(shell, "%%llm --image notes\nWhat is it")
    assert isinstance(cell.error, ImageError), cell.text
    line = cell.text.strip()
    assert "--image notes: no such file 'this is not a path" in line, line
    assert len(line) < 400
    assert sent(vision) == []


def test_map_rows_without_an_image_fail_by_their_multiindex_label(
    shell: InteractiveShell, vision: OllamaStandIn
) -> None:
    import numpy as np
    import pandas as pd

    shell.user_ns["shots"] = pd.DataFrame(
        {"img": [PNG, np.nan, None], "t": ["a", "b", "c"]},
        index=pd.MultiIndex.from_tuples([(1, "x"), (1, "y"), (2, "x")]),
    )
    cell = run(shell, "%%llm --map shots --image {img} -o out\nWhat is {t}")
    assert cell.error is None, cell.text
    assert "1 ok, 2 failed" in cell.stdout and "np.int64" not in cell.stdout, cell.stdout
    assert "failed rows: (1, 'y'), (2, 'x'); first failure at row (1, 'y'): " in cell.stdout
    assert "ImageError: --image {img}: this row has no image (nan)" in cell.stdout
    assert str(shell.user_ns["out"][(2, "x")]).startswith("--image {img}: this row has no image")
    shell.user_ns["nothing"] = None
    cell = run(shell, "%%llm --image nothing\nWhat is it")
    assert "ImageError: %%llm: --image nothing: there is no image (None)" in cell.text
    assert sent(vision) == [[base64.b64encode(PNG).decode()]]


def test_data_that_is_no_image_is_never_sent(
    shell: InteractiveShell, vision: OllamaStandIn, tmp_path: Path
) -> None:
    # A --map column of paths from untrusted data must not ship a private key to a server.
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEA\n")
    jpeg = tmp_path / "ok.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 16)
    shell.user_ns["paths"] = [str(key), str(jpeg)]
    cell = run(shell, "%%llm --map paths --image {item} -o out\nDescribe it")
    assert cell.error is None, cell.text
    assert "1 ok, 1 failed" in cell.stdout
    assert "id_ed25519' is not an image (PNG, JPEG, GIF, WebP, BMP or TIFF)" in cell.stdout
    assert sent(vision) == [[base64.b64encode(jpeg.read_bytes()).decode()]]
    shell.user_ns["text_bytes"] = b"just some text"
    refused(shell, "text_bytes", "--image text_bytes is not an image (PNG, JPEG")


def test_a_url_is_not_fetched_and_says_so(shell: InteractiveShell, vision: OllamaStandIn) -> None:
    shell.user_ns["link"] = "https://example.com/cat.png"
    refused(shell, "link", "--image link: 'https://example.com/cat.png' is a URL; images are")
    assert sent(vision) == []


def test_an_image_object_that_cannot_be_drawn_is_one_line(
    shell: InteractiveShell, vision: OllamaStandIn
) -> None:
    from PIL import Image

    closed = Image.new("RGB", (4, 4))
    closed.close()
    shell.user_ns["closed"] = closed
    refused(shell, "closed", "--image closed: cannot be saved as PNG (ValueError: Operation on")
    assert sent(vision) == []
