"""The locally built image: cached builds, and what the two variants hold."""

from __future__ import annotations

import docker
import pytest

from gleitzeit_jupyter.providers.sandbox.cli import main
from gleitzeit_jupyter.providers.sandbox.engine import LABEL
from gleitzeit_jupyter.providers.sandbox.image import (
    DEFAULT_IMAGE,
    IMAGE_LABEL,
    MINIMAL_IMAGE,
    build_image,
)

pytestmark = pytest.mark.docker

PROBE = (
    "import importlib.util as u, json, sys; "
    "print(json.dumps({m: bool(u.find_spec(m)) for m in "
    "['numpy', 'pandas', 'matplotlib', 'json', 'sqlite3', 'ctypes']}))"
)


def probe(client: docker.DockerClient, image: str) -> str:
    return client.containers.run(
        image, ["python3", "-c", PROBE], remove=True, network_mode="none", labels={LABEL: "1"}
    ).decode()


def test_build_is_cached(
    docker_client: docker.DockerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["image", "build"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    image = docker_client.images.get(DEFAULT_IMAGE)
    assert image.labels[IMAGE_LABEL] == "1"


def test_default_image_has_the_science_stack_and_minimal_does_not(
    docker_client: docker.DockerClient,
) -> None:
    assert '"numpy": true, "pandas": true, "matplotlib": true' in probe(
        docker_client, DEFAULT_IMAGE
    )
    build_image(MINIMAL_IMAGE, minimal=True, client=docker_client)  # cached when present
    minimal = probe(docker_client, MINIMAL_IMAGE)
    assert '"numpy": false' in minimal and '"json": true, "sqlite3": true' in minimal


def test_cli_reports_failures_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "image",
                "build",
                "--name",
                "gleitzeit-never:x",
                "--base",
                "debootstrap",
                "--mirror",
                "http://127.0.0.1:9/none",
                "--suite",
                "nosuchsuite",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("gleitzeit-sandbox: image build failed:") and "\n" not in err
