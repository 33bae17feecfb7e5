"""Choosing how the containers run: an OCI runtime (gVisor) and a docker network by name."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from gleitzeit_jupyter.hub import UserError
from gleitzeit_jupyter.providers.sandbox import PythonProvider

from .conftest import container_of, run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio]


async def test_a_runtime_the_engine_lacks_is_a_clear_error(
    docker_client: docker.DockerClient,
) -> None:
    pool = PythonProvider(max_containers=1, min_warm=1, runtime="no-such-runtime")
    with pytest.raises(UserError, match=r"has no runtime 'no-such-runtime'.*daemon\.json"):
        await pool.initialize()
    await pool.shutdown()


@pytest.fixture
def own_network(docker_client: docker.DockerClient) -> Iterator[str]:
    net = docker_client.networks.create("gleitzeit-test-net", internal=True)
    try:
        yield str(net.name)
    finally:
        net.remove()


async def test_network_accepts_the_name_of_a_docker_network(
    docker_client: docker.DockerClient, own_network: str
) -> None:
    async with PythonProvider(max_containers=1, min_warm=1, network=own_network) as pool:
        r = await run(pool, "import socket\nsorted(n for _, n in socket.if_nameindex())")
        assert r["outputs"][0]["data"]["text/plain"] == "['eth0', 'lo']"
        cid = container_of(pool, pool.instances[0].id)
        attrs = docker_client.api.inspect_container(cid)
        assert set(attrs["NetworkSettings"]["Networks"]) == {own_network}
