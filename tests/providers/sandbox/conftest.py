"""Fixtures for the sandbox tests: a real docker engine and a real pool, no stand-ins.

A missing engine or image fails these tests (``./scripts/test`` starts dockerd and builds the
image first); nothing here skips. ``GLEITZEIT_TEST_RUNTIME=runsc`` (with ``DOCKER_HOST`` naming an
engine that has it, as ./scripts/test sets up) runs the pools under gVisor.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import docker.errors
import pytest
import pytest_asyncio

from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.engine import LABEL, OWNER_LABEL, owner_label
from gleitzeit_jupyter.providers.sandbox.image import DEFAULT_IMAGE

MiB = 1024 * 1024

#: The OCI runtime the pools use (None: the engine's default, runc).
RUNTIME = os.environ.get("GLEITZEIT_TEST_RUNTIME") or None


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()  # no engine: fail loudly, never skip
    try:
        client.images.get(DEFAULT_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(
            f"{DEFAULT_IMAGE} missing: run `gleitzeit-sandbox image build` (./scripts/test does)"
        )
    yield client
    # Whatever a failing test left behind: only containers this test process created.
    for c in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
        if c.labels.get(OWNER_LABEL) == owner_label():
            try:
                c.remove(force=True)
            except docker.errors.APIError as exc:
                # 409: the pool's own removal (of a container replaced after an OOM, say)
                # is still under way; 404: it finished meanwhile.
                if exc.status_code not in (404, 409):
                    raise
    client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(docker_client: docker.DockerClient) -> AsyncIterator[PythonProvider]:
    provider = PythonProvider(
        max_containers=5,
        min_warm=2,
        timeout=20,
        health_check_interval=2.0,
        runtime=RUNTIME,
        # gVisor's own kernel counts against the limit and gives freed memory back slowly;
        # the value caps stay those of the default limit (a larger one would raise them).
        **(
            {"mem_limit": "1g", "max_value_bytes": 32 * MiB, "max_values_bytes": 64 * MiB}
            if RUNTIME == "runsc"
            else {}
        ),
    )
    await provider.initialize()
    yield provider
    await provider.close()


async def run(provider: PythonProvider, code: str, **params: Any) -> dict[str, Any]:
    instance = params.pop("instance", None)
    return await provider.execute("python/execute", {"code": code, **params}, instance=instance)


def container_of(provider: PythonProvider, instance_id: str) -> str:
    return str(provider.get_instance(instance_id).metadata["container"])
