"""%%llm --image: images from the notebook, base64 in Ollama's images, vision models only."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from kernel_helpers import run

from gleitzeit_jupyter.hub.errors import UserError
from gleitzeit_jupyter.kernel.llm_images import ImageError
from gleitzeit_jupyter.testing.ollama import OllamaStandIn

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def pair(shell: InteractiveShell) -> Iterator[tuple[OllamaStandIn, OllamaStandIn]]:
    """The same model on two servers; only the second one's build can see images."""
    blind = OllamaStandIn(
        models=["gemma3:latest"], capabilities={"gemma3:latest": ["completion"]}, tokens_per_s=500
    )
    seeing = OllamaStandIn(
        models=["gemma3:latest"],
        capabilities={"gemma3:latest": ["completion", "vision"]},
        tokens_per_s=500,
    )
    with blind, seeing:
        shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{blind.url}', '{seeing.url}']")
        shell.run_cell("%config Gleitzeit.default_model = 'gemma3'")
        yield blind, seeing
    shell.run_cell("%config Gleitzeit.default_model = 'llama3.2'")


def images_sent(srv: OllamaStandIn) -> list[list[str]]:
    return [r.body["images"] for r in srv.requests_to("/api/generate") if "images" in r.body]


def test_images_go_only_to_the_instance_whose_model_has_vision(
    shell: InteractiveShell, pair: tuple[OllamaStandIn, OllamaStandIn]
) -> None:
    blind, seeing = pair
    shell.user_ns["photo"] = PNG
    # Round robin would alternate; the call's need for vision leaves one candidate.
    for strategy in ["fleet", "round_robin", "round_robin", "least_loaded"]:
        cell = run(shell, f"%%llm --strategy {strategy} --image photo\nWhat is in the picture")
        assert cell.error is None, cell.text
    assert images_sent(seeing) == [[b64(PNG)]] * 4
    assert images_sent(blind) == []
    # Without an image both servers serve the model.
    shell.user_ns["rows"] = list(range(8))
    cell = run(shell, "%%llm --map rows --strategy round_robin -o plain\nCount to {item}")
    assert cell.error is None, cell.text
    assert blind.requests_to("/api/generate"), "text calls should use the blind server too"


def test_image_sources_path_bytes_pil_and_figure(
    shell: InteractiveShell, pair: tuple[OllamaStandIn, OllamaStandIn], tmp_path: Path
) -> None:
    from matplotlib.figure import Figure
    from PIL import Image

    _, seeing = pair
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([1, 2, 3])
    shell.user_ns.update(
        raw=PNG, where=str(path), pic=Image.new("RGB", (7, 5), "red"), fig=fig, p=path
    )
    cell = run(shell, f"%%llm --image raw --image where --image {path} --image p\nCompare")
    assert cell.error is None, cell.text
    assert images_sent(seeing)[-1] == [b64(PNG)] * 4
    cell = run(shell, "%%llm --image pic --image fig\nDescribe")
    assert cell.error is None, cell.text
    pic, plot = (base64.b64decode(s) for s in images_sent(seeing)[-1])
    assert Image.open(io.BytesIO(pic)).size == (7, 5)
    assert plot.startswith(b"\x89PNG") and Image.open(io.BytesIO(plot)).format == "PNG"


def test_image_mistakes_are_one_line_before_any_call(
    shell: InteractiveShell, pair: tuple[OllamaStandIn, OllamaStandIn], tmp_path: Path
) -> None:
    _, seeing = pair
    shell.user_ns.update(number=3, empty=b"")
    cases = {
        "%%llm --image nowhere\nx": "--image nowhere: no variable or file named 'nowhere'",
        f"%%llm --image {tmp_path}/gone.png\nx": "no such file",
        f"%%llm --image {tmp_path}\nx": "is a directory, not an image file",
        "%%llm --image number\nx": "--image number is a int; use a file path, bytes",
        "%%llm --image empty\nx": "--image empty is empty",
        "%%llm --image {col}\nx": "--image {col} takes each row's image from a column",
    }
    for source, message in cases.items():
        cell = run(shell, source)
        assert isinstance(cell.error, UserError), (source, cell.text)
        assert message in cell.text and len(cell.text.strip().splitlines()) == 1, cell.text
    assert isinstance(run(shell, "%%llm --image number\nx").error, ImageError)
    assert images_sent(seeing) == []


def test_a_model_without_vision_anywhere_is_a_clear_error(
    shell: InteractiveShell, pair: tuple[OllamaStandIn, OllamaStandIn]
) -> None:
    blind, _ = pair
    shell.run_cell(f"%config Gleitzeit.ollama_hosts = ['{blind.url}']")
    shell.user_ns["photo"] = PNG
    cell = run(shell, "%%llm --image photo\nWhat is it")
    assert isinstance(cell.error, UserError)
    assert "lacks vision" in cell.text and len(cell.text.strip().splitlines()) == 1


def test_map_takes_each_rows_image_from_a_column(
    shell: InteractiveShell, pair: tuple[OllamaStandIn, OllamaStandIn], tmp_path: Path
) -> None:
    _, seeing = pair
    files = []
    for k in range(3):
        f = tmp_path / f"img{k}.png"
        f.write_bytes(PNG + bytes([k]))
        files.append(str(f))
    files.append(str(tmp_path / "missing.png"))
    shell.user_ns["shots"] = pd.DataFrame(
        {"file": files, "blob": [PNG + b"b" + bytes([k]) for k in range(4)]},
        index=list("abcd"),
    )
    cell = run(shell, "%%llm --map shots --image {file} --image {blob} -o seen\nDescribe")
    assert cell.error is None, cell.text
    sent = {tuple(x) for x in images_sent(seeing)}
    want = {(b64(PNG + bytes([k])), b64(PNG + b"b" + bytes([k]))) for k in range(3)}
    assert sent == want
    seen = shell.user_ns["seen"]
    assert list(seen.index) == list("abcd")
    assert isinstance(seen["d"], ImageError) and "missing.png" in str(seen["d"])
    assert "3 ok, 1 failed" in cell.stdout and "failed rows: 'd'" in cell.stdout
    cell = run(shell, "%%llm --map shots --image {photo}\nDescribe")
    assert isinstance(cell.error, UserError)
    assert "--image {photo}: no column 'photo' in the --map rows" in cell.text
