"""Derived images with extra packages: built from wheels fetched on the host, installed with
no network, cached by content hash (real engine, real pip with this machine's configuration)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.cli import main as cli
from gleitzeit_jupyter.providers.sandbox.packages import (
    PACKAGES_LABEL,
    build_packages,
    derived_name,
)

from .conftest import RUNTIME, run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]

# Small and pure Python: the build stays quick enough for every CI run.
PACKAGE = "threadpoolctl"


async def test_a_derived_image_has_the_package_and_the_base_stack(
    docker_client: docker.DockerClient,
) -> None:
    name = build_packages([PACKAGE], client=docker_client, log=lambda _: None)
    image = docker_client.images.get(name)
    assert image.labels[PACKAGES_LABEL] == PACKAGE
    async with PythonProvider(max_containers=1, image=name, runtime=RUNTIME) as pool:
        r = await run(pool, "import threadpoolctl, pandas\nprint(pandas.__version__)")
        base = await run(pool, "import pandas\nprint(pandas.__version__)")
    assert r["error"] is None, r["error"]
    assert r["stdout"] == base["stdout"]  # the base image's pandas stayed


async def test_the_same_package_list_is_a_cache_hit(docker_client: docker.DockerClient) -> None:
    first = build_packages([PACKAGE], client=docker_client, log=lambda _: None)
    said: list[str] = []
    again = build_packages([f" {PACKAGE.upper()} "], client=docker_client, log=said.append)
    assert again == first and "nothing to do" in said[0]
    assert derived_name(docker_client, [PACKAGE, "six"], "gleitzeit-sandbox:latest") != first


async def test_the_command_line_builds_from_a_requirements_file(tmp_path, capsys) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text(f"# comment\n{PACKAGE} >= 1.0  # why\n")
    assert cli(["image", "build", "--requirements", str(req)]) == 0
    assert "gleitzeit-sandbox:pkgs-" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec", ["https://evil.example/x.whl", "--index-url=http://x", "../pkg", "a b", ""]
)
async def test_anything_but_a_requirement_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        build_packages([spec], client=docker.from_env(), log=lambda _: None)


async def test_pip_on_the_host_does_not_import_from_the_kernels_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel's cwd receives files from the sandbox; ``python -m pip`` there would run a
    # pip.py (or a json.py pip imports) found in it, and treat a cwd file named like the
    # package as a local archive to build.
    from gleitzeit_jupyter.providers.sandbox.packages import _download

    cwd = tmp_path
    marker = cwd / "ran"
    (cwd / "pip.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "1")
    wheels = cwd / "wheels"
    wheels.mkdir()
    probe = {"python": "3.11", "machine": "x86_64", "installed": {}}
    with pytest.raises(RuntimeError, match="pip download failed"):
        _download(["nonexistent-pkg-zz"], probe, str(wheels), lambda _: None)
    assert not marker.exists()
