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
from .test_sandbox_hostile import FORGE

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def small(docker_client: docker.DockerClient) -> AsyncIterator[PythonProvider]:
    # Caps raised: the limit under test is the memory, not the size of a value.
    cap = 512 * 1024 * 1024
    provider = PythonProvider(
        max_containers=1,
        mem_limit="256m",
        timeout=60,
        runtime=RUNTIME,
        max_value_bytes=cap,
        max_values_bytes=cap,
    )
    await provider.initialize()
    yield provider
    await provider.close()


async def test_running_out_of_memory_receiving_inputs_says_so(small: PythonProvider) -> None:
    # 224 MB of numbers: the worker cannot even hold the bytes under a 256 MB limit.
    df = pd.DataFrame({"a": np.zeros(28_000_000)})
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


async def test_numeric_frames_round_trip_with_exact_dtypes(pool: PythonProvider) -> None:
    df = pd.DataFrame(
        {
            "i8": np.arange(5, dtype="int8"),
            "u4": np.arange(5, dtype="uint32"),
            "f4": np.linspace(0, 1, 5, dtype="float32"),
            "c": np.arange(5) + 1j,
            "b": np.array([True, False, True, False, True]),
        },
        index=np.arange(10, 15),
    )
    r = await run(
        pool,
        "back = df\nkinds = [str(t) for t in df.dtypes]",
        inputs={"df": df},
        returns=["back", "kinds"],
    )
    assert r["error"] is None, r["error"]
    assert r["values"]["kinds"] == ["int8", "uint32", "float32", "complex128", "bool"]
    pd.testing.assert_frame_equal(r["values"]["back"], df)


@pytest.mark.parametrize(
    "forged",
    [
        "{'t': 'dataframe', 'fmt': 'columns', 'names': ['a'], 'columns': [],"
        " 'index': {'range': [0, 1, 1]}}",
        "{'t': 'dataframe', 'fmt': 'columns', 'names': ['a'], 'columns': [{'t': 'json', 'v': 1}],"
        " 'index': {'range': [0, 1, 1]}}",
        "{'t': 'dataframe', 'fmt': 'columns', 'names': ['a'], 'columns': [{'t': 'ndarray',"
        " 'dtype': '<i8', 'shape': [2], 'b64': 'AAAAAAAAAAABAAAAAAAAAA=='}],"
        " 'index': {'range': [0, 5, 1]}}",
        "{'t': 'dataframe', 'fmt': 'columns', 'names': ['a'], 'columns': [{'t': 'ndarray',"
        " 'dtype': '<i8', 'shape': [1], 'b64': 'AAAAAAAAAAA='}], 'index': {'range': [0, 1, 0]}}",
    ],
    ids=["fewer columns", "not an array", "lengths differ", "zero step"],
)
async def test_forged_column_frames_are_refused(pool: PythonProvider, forged: str) -> None:
    code = FORGE + f"forge({{'exit_code': 0, 'error': None, 'values': {{'x': {forged}}}}})\n"
    r = await run(pool, code, returns=["x"])
    assert r["values"] == {} and r["error"]["ename"] == "CodecError", r["error"]


async def test_a_wide_json_frame_decodes_in_linear_time() -> None:
    # A reply of a few hundred kB naming thousands of columns must not hold the kernel for
    # minutes while each column's dtype is looked up.
    import json
    import time

    from gleitzeit_jupyter.providers.sandbox.codec import decode_value, encode_value

    df = pd.DataFrame([[0] * 5000], columns=[f"c{i}" for i in range(5000)]).astype(object)
    df.iloc[0, 0] = "s"
    enc = json.loads(json.dumps(encode_value(df, name="df")))
    assert enc["fmt"] == "split"
    started = time.perf_counter()
    out = decode_value(enc)
    assert time.perf_counter() - started < 5.0
    assert out.shape == (1, 5000) and out.iloc[0, 0] == "s"
