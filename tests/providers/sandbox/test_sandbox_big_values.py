"""Big values through a real container: exact dtypes both ways, clear refusals, memory inside
within about twice a frame's size, and forged attachment streams from user code failing only
their own run (real engine and image)."""

from __future__ import annotations

import decimal

import numpy as np
import pandas as pd
import pytest

from gleitzeit_jupyter.hub import UserError
from gleitzeit_jupyter.providers.sandbox import PythonProvider

from .conftest import container_of, run
from .test_sandbox_hostile import still_serves

pytestmark = [pytest.mark.docker, pytest.mark.asyncio(loop_scope="module")]

MiB = 1024 * 1024

# Raw bytes written by user code onto every descriptor it can reach, its result pipe among them.
RAW = (
    "import os, json, struct\n"
    "def raw(data):\n"
    "    for fd in range(3, 64):\n"
    "        try:\n"
    "            os.write(fd, data)\n"
    "        except OSError:\n"
    "            pass\n"
    "def head(message):\n"
    "    body = json.dumps(message).encode()\n"
    "    return struct.pack('>I', len(body)) + body\n"
    "def chunk(data, size=None):\n"
    "    return struct.pack('>I', 0x80000000 | (len(data) if size is None else size)) + data\n"
)


def mixed() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "when": pd.date_range("2024-10-26", periods=4, freq="12h", tz="Europe/Berlin"),
            "cat": pd.Categorical(["b", "a", "b", "a"], categories=["b", "a"], ordered=True),
            "n": pd.array([1, None, 3, 4], dtype="Int64"),
            "flag": pd.array([True, None, False, True], dtype="boolean"),
            "s": pd.array(["x", None, "z", "w"], dtype="string"),
            "plain": ["x", "y", None, "w"],
            "money": [decimal.Decimal("1.10"), None, decimal.Decimal("2.5"), decimal.Decimal(0)],
            "f": [1.5, np.nan, -0.0, 1e300],
        },
        index=pd.Index(["r1", "r2", "r3", "r4"], name="key"),
    )


async def test_dtypes_arrow_carries_round_trip_exactly(pool: PythonProvider) -> None:
    df = mixed()
    r = await run(
        pool,
        "back = df\nkinds = [str(t) for t in df.dtypes]\nkey = df.index.name",
        inputs={"df": df},
        returns=["back", "kinds", "key"],
    )
    assert r["error"] is None, r["error"]
    assert r["values"]["kinds"] == [str(t) for t in df.dtypes]  # the same inside
    assert r["values"]["key"] == "key"
    pd.testing.assert_frame_equal(r["values"]["back"], df)


async def test_a_frame_made_inside_comes_back_with_its_dtypes(pool: PythonProvider) -> None:
    code = (
        "import pandas as pd\n"
        "s = pd.Series(pd.date_range('2024-01-01', periods=3, tz='US/Eastern'), name='t')\n"
        "df = pd.DataFrame({'c': pd.Categorical(['u', 'v', 'u']), 'i': pd.array([1, None, 2],"
        " dtype='Int8')})\n"
    )
    r = await run(pool, code, returns=["s", "df"])
    assert r["error"] is None, r["error"]
    assert str(r["values"]["s"].dtype) == "datetime64[us, US/Eastern]"
    assert r["values"]["s"].name == "t"
    assert isinstance(r["values"]["df"]["c"].dtype, pd.CategoricalDtype)
    assert str(r["values"]["df"]["i"].dtype) == "Int8"


async def test_what_cannot_travel_exactly_is_an_error_naming_column_and_dtype(
    pool: PythonProvider,
) -> None:
    df = pd.DataFrame({"a": ["x", "y"], "p": pd.period_range("2024", periods=2, freq="M")})
    with pytest.raises(UserError, match=r"column 'p' has dtype period\[M\]"):
        await run(pool, "len(df)", inputs={"df": df})
    code = "import pandas as pd\nz = pd.DataFrame({'a': ['x', 'y'], 'c': [1 + 2j, 3j]})"
    r = await run(pool, code, returns=["z"])
    assert r["values"] == {} and r["error"]["ename"] == "CodecError"
    assert "column 'c' has dtype complex128" in r["error"]["evalue"]


async def test_copy_on_write_behaves_as_in_the_kernel(pool: PythonProvider) -> None:
    code = "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\ns = df['a']\ns[1] = 100\n"
    r = await run(pool, code + "out = df['a'].tolist()", returns=["out"])
    here: dict = {}
    exec(code, here)
    assert r["error"] is None, r["error"]
    assert r["values"]["out"] == here["df"]["a"].tolist()


@pytest.mark.parametrize(
    ("frame", "size"),
    [
        pytest.param(
            lambda: pd.DataFrame({"a": np.arange(2_000_000), "b": np.ones(2_000_000)}),
            32 * MiB,
            id="numeric columns",
        ),
        pytest.param(
            lambda: pd.DataFrame({"s": [f"row {i:>12}" for i in range(1_000_000)]}),
            20 * MiB,
            id="strings via Arrow",
        ),
    ],
)
async def test_a_received_frame_costs_at_most_about_twice_its_size(
    pool: PythonProvider, frame: object, size: int
) -> None:
    # Not in the gVisor pass of ./scripts/test: gVisor's /proc has no VmHWM to measure.
    inst = pool.instances[0].id
    df = frame()  # type: ignore[operator]
    # The same worker start without the frame (pandas imported alike): the baseline.
    base = await run(pool, "import pandas\nlen([])", instance=inst)
    got = await run(pool, "len(df)", inputs={"df": df}, instance=inst)
    assert got["error"] is None, got["error"]
    grown = (got["peak_memory_mb"] - base["peak_memory_mb"]) * MiB
    # Numeric columns arrive without a copy: 2x. Strings go through Arrow and pandas' own
    # string column, and the allocator's arenas move their peak a lot between identical
    # runs (33-74 MiB for 20 MiB here): 3x for them still refuses a decode into Python
    # objects or a JSON copy, which are far above it.
    factor = 2 if size == 32 * MiB else 3
    assert grown <= factor * size + 16 * MiB, (grown / MiB, size / MiB)


@pytest.mark.parametrize(
    ("forged", "ename"),
    [
        pytest.param(
            "raw(head({'exit_code': 0, 'attachments': [16]}) + chunk(b'', size=2 << 20))",
            "ProtocolError",
            id="chunk header over 1 MiB",
        ),
        pytest.param(
            "raw(head({'exit_code': 0, 'attachments': [16]}) + chunk(b'x' * 20))",
            "ProtocolError",
            id="chunk past the declared size",
        ),
        pytest.param(
            "raw(head({'exit_code': 0, 'attachments': [1000]}) + chunk(b'x' * 10))",
            "ProtocolError",
            id="truncated attachment",
        ),
        pytest.param(
            "raw(head({'exit_code': 0, 'attachments': [1 << 31]}))",
            "ProtocolError",
            id="oversize declaration",
        ),
        pytest.param(
            "raw(head({'exit_code': 0, 'values': {'x': {'t': 'ndarray', 'dtype': '<i8',"
            " 'shape': [3], 'a': 0}}, 'attachments': [16]}) + chunk(b'\\0' * 16))",
            "CodecError",
            id="array size unlike its shape",
        ),
        pytest.param(
            "raw(head({'exit_code': 0, 'values': {'x': {'t': 'dataframe', 'fmt': 'arrow',"
            " 'a': 0}}, 'attachments': [16]}) + chunk(b'\\xff' * 16))",
            "CodecError",
            id="not an Arrow stream",
        ),
        pytest.param(
            "import pyarrow as pa\n"
            "t = pa.table({f'c{i}': pa.array([], pa.int8()) for i in range(100_000)})\n"
            "sink = pa.BufferOutputStream()\n"
            "with pa.ipc.new_stream(sink, t.schema) as w:\n"
            "    w.write_table(t)\n"
            "b = sink.getvalue().to_pybytes()\n"
            "raw(head({'exit_code': 0, 'values': {'x': {'t': 'dataframe', 'fmt': 'arrow',"
            " 'a': 0}}, 'attachments': [len(b)]})"
            " + b''.join(chunk(b[i:i + (1 << 20)]) for i in range(0, len(b), 1 << 20)))",
            "CodecError",
            id="100,000 columns",
        ),
    ],
)
async def test_a_forged_attachment_stream_fails_only_its_own_run(
    pool: PythonProvider, forged: str, ename: str
) -> None:
    inst = pool.instances[1].id
    before = container_of(pool, inst)
    r = await run(pool, RAW + forged + "\nx = 1", instance=inst, returns=["x"], timeout=30)
    assert r["timed_out"] is False and r["values"] == {}
    assert r["error"]["ename"] == ename, r["error"]
    if "100,000" in forged or "100_000" in forged:
        assert "max_columns" in r["error"]["evalue"]
    assert container_of(pool, inst) == before  # the supervisor and channel lived through it
    await still_serves(pool, inst)


async def test_a_larger_memory_limit_lets_larger_values_back() -> None:
    default = PythonProvider()
    assert (default.limits.max_value_bytes, default.limits.max_values_bytes) == (32 * MiB, 64 * MiB)
    big = PythonProvider(mem_limit="2g")
    assert big.limits.max_value_bytes >= 160_000_000  # a 10M x 2 frame comes back
    given = PythonProvider(mem_limit="2g", max_value_bytes=MiB)
    assert given.limits.max_value_bytes == MiB
    # A limit not understood here keeps the documented caps (the engine judges the limit).
    for odd in ("", "infg", "1e400g", "lots"):
        assert PythonProvider(mem_limit=odd).limits.max_value_bytes == 32 * MiB
