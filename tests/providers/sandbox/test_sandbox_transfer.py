"""Moving big values: when the transfer, not the cell's code, runs out of memory, the error
says so and suggests a larger limit (real engine, a pool with a small memory limit)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator

import docker
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio

from gleitzeit_jupyter.providers.sandbox import PythonProvider
from gleitzeit_jupyter.providers.sandbox.endings import died

from .conftest import RUNTIME, run

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def small(docker_client: docker.DockerClient) -> AsyncIterator[PythonProvider]:
    provider = PythonProvider(max_containers=1, mem_limit="256m", timeout=60, runtime=RUNTIME)
    await provider.initialize()
    yield provider
    await provider.close()


async def test_running_out_of_memory_receiving_inputs_says_so(small: PythonProvider) -> None:
    df = pd.DataFrame({"a": np.arange(1_000_000), "b": np.random.default_rng(0).random(1_000_000)})
    r = await run(small, "len(df)", inputs={"df": df})
    assert r["oom"] is True, r["error"]
    assert "while receiving the --in values" in r["error"]["evalue"]
    assert "--mem" in r["error"]["evalue"]


async def test_running_out_of_memory_sending_values_back_says_so(small: PythonProvider) -> None:
    r = await run(small, "import numpy as np\nx = np.ones(20_000_000)", returns=["x"])
    assert r["oom"] is True, r["error"]
    assert "while sending the --out values back" in r["error"]["evalue"]


async def test_the_cells_own_allocation_is_not_blamed_on_the_transfer() -> None:
    # The wording for a worker killed by the OOM killer while the cell's code ran.
    err = died(signal.SIGKILL, killed=False, oom_grew=True, phase=None)["error"]
    assert err["ename"] == "MemoryError"
    assert "transfer" not in err["evalue"] and "--mem" in err["evalue"]
