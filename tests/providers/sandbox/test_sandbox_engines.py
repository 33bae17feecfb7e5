"""Several docker engines: a second dockerd on its own socket and data root (started with
scripts/lib/docker.sh, as CI does), and a pool spread over both."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.image import MINIMAL_IMAGE, build_image

from .conftest import run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
ENGINE = "gztest"


def docker_sh(command: str) -> str:
    done = subprocess.run(
        ["bash", "-c", f"source scripts/lib/docker.sh && {command}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def second_engine(docker_client: docker.DockerClient) -> Iterator[str]:
    # The small image travels to the second engine (no registry here to pull it from).
    build_image(MINIMAL_IMAGE, minimal=True, client=docker_client)
    host = docker_sh(f"gz_docker_start_extra {ENGINE}")
    try:
        yield host
    finally:
        docker_sh(f"gz_docker_stop_extra {ENGINE}")


@pytest.mark.asyncio
async def test_pool_spreads_over_two_engines(second_engine: str) -> None:
    default = "unix:///var/run/docker.sock"
    assert second_engine != default
    other = docker.DockerClient(base_url=second_engine)
    try:
        assert other.info()["DockerRootDir"] != docker.from_env().info()["DockerRootDir"]
        pool = PythonProvider(
            max_containers=4, min_warm=2, image=MINIMAL_IMAGE, docker_hosts=[default, second_engine]
        )
        async with pool:
            engines = {i.metadata["engine"] for i in pool.instances}
            assert engines == {default, second_engine}
            # the containers really live on both engines
            on_second = other.containers.list(filters={"label": "gleitzeit.sandbox=1"})
            assert {c.id[:12] for c in on_second} & {
                i.metadata["container"] for i in pool.instances
            }
            results = await asyncio.gather(*(run(pool, f"print({i})") for i in range(12)))
            assert sorted(int(r["stdout"]) for r in results) == list(range(12))
            used = {pool.get_instance(r["instance"]).metadata["engine"] for r in results}
            assert used == {default, second_engine}
            # scaling up keeps spreading: the next two slots go one to each engine
            await asyncio.gather(*(run(pool, "import time\ntime.sleep(0.5)") for _ in range(8)))
            per_engine = [i.metadata["engine"] for i in pool.instances]
            assert per_engine.count(default) == per_engine.count(second_engine) == 2
        assert not other.containers.list(all=True, filters={"label": "gleitzeit.sandbox=1"})
    finally:
        other.close()


@pytest.mark.asyncio
async def test_docker_host_from_the_environment(
    second_engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", second_engine)
    other = docker.DockerClient(base_url=second_engine)
    try:
        async with PythonProvider(max_containers=1, min_warm=1, image=MINIMAL_IMAGE) as pool:
            assert pool.instances[0].metadata["engine"] == second_engine
            r = await run(pool, "import sys\nprint(sys.version_info[0])")
            assert r["stdout"] == "3\n"
            ids = {
                c.id[:12] for c in other.containers.list(filters={"label": "gleitzeit.sandbox=1"})
            }
            assert r["container"] in ids
    finally:
        other.close()
