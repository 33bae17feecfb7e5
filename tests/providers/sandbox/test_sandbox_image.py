"""The locally built image: cached builds, and what the two variants hold."""

from __future__ import annotations

import json

import docker
import pytest

from gleitzeit_jupyter.providers.sandbox.cli import main
from gleitzeit_jupyter.providers.sandbox.engine import LABEL
from gleitzeit_jupyter.providers.sandbox.image import (
    DEFAULT_IMAGE,
    IMAGE_LABEL,
    MINIMAL_IMAGE,
    STACK_LABEL,
    build_image,
    image_stack,
    image_stack_key,
    import_rootfs,
)
from gleitzeit_jupyter.providers.sandbox.stack import STACK, kernel_stack, stack_key

pytestmark = pytest.mark.docker

PROBE = (
    "import importlib.util as u, json, sys; "
    "print(json.dumps({m: bool(u.find_spec(m)) for m in "
    "['numpy', 'pandas', 'matplotlib', 'pyarrow', 'json', 'sqlite3', 'ctypes']}))"
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
    assert '"numpy": true, "pandas": true, "matplotlib": true, "pyarrow": true' in probe(
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


def minor(version: str) -> list[str]:
    return version.split(".")[:2]


def test_default_image_holds_the_kernels_data_stack_and_says_so(
    docker_client: docker.DockerClient,
) -> None:
    here = kernel_stack()
    recorded = image_stack(docker_client, DEFAULT_IMAGE)
    assert recorded is not None and set(recorded) == set(STACK) == set(here)
    assert {n: minor(v) for n, v in recorded.items()} == {n: minor(v) for n, v in here.items()}
    labels = docker_client.images.get(DEFAULT_IMAGE).labels
    assert labels[STACK_LABEL] == image_stack_key(recorded)
    # What is installed inside, read by its own metadata, is what the label and manifest say.
    code = (
        "import importlib.metadata as m, json; "
        f"print(json.dumps({{n: m.version(n) for n in {list(STACK)!r}}})); "
        "print(open('/usr/share/gleitzeit/stack.json').read())"
    )
    out = (
        docker_client.containers.run(
            DEFAULT_IMAGE,
            ["python3", "-c", code],
            remove=True,
            network_mode="none",
            labels={LABEL: "1"},
        )
        .decode()
        .splitlines()
    )
    assert json.loads(out[0]) == recorded
    assert json.loads(out[1]) == {"versions": recorded, "key": labels[STACK_LABEL]}


def test_the_cache_key_follows_the_version_set() -> None:
    base = {"numpy": "2.4.6", "pandas": "3.1.1"}
    assert stack_key(dict(base)) == stack_key(dict(reversed(list(base.items()))))
    assert stack_key({**base, "numpy": "2.4.7"}) != stack_key(base)
    assert stack_key({**base, "pyarrow": "26.0.1"}) != stack_key(base)


def test_the_minimal_image_records_no_stack(docker_client: docker.DockerClient) -> None:
    build_image(MINIMAL_IMAGE, minimal=True, client=docker_client)  # cached when present
    assert image_stack(docker_client, MINIMAL_IMAGE) is None


def test_a_root_filesystem_that_fails_to_pack_leaves_no_tagged_image(
    docker_client: docker.DockerClient, tmp_path: pytest.TempPathFactory
) -> None:
    # docker imports an empty stream as an empty image: a tag set before the packing was known
    # to have worked would be found by the cache and used by every later pool.
    name = "gleitzeit-sandbox-test-import:broken"
    with pytest.raises(RuntimeError, match="tar"):
        import_rootfs(docker_client, str(tmp_path) + "/missing", name, [])
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(name)
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello").write_text("hi")
    ok = "gleitzeit-sandbox-test-import:ok"
    import_rootfs(docker_client, str(root), ok, ['LABEL gleitzeit.test="1"'])
    try:
        assert docker_client.images.get(ok).labels.get("gleitzeit.test") == "1"
    finally:
        docker_client.images.remove(ok, force=True)
